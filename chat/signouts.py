"""Signing out closes every socket the person has open, on every server process.

Each process keeps its signed-in sockets in a dict by user id (a set add per socket, nothing on the
channel layer); a sign-out is one `group_send` to GROUP, which one listener per process receives when
the layer is shared (Redis). A group per person would cost every signed-in socket a channel, a
receive task and two Redis calls; this costs each process one channel and one task.
"""

import asyncio
import logging
from collections import defaultdict

from chat.replies import CHANNEL_PREFIX, shared_layer

log = logging.getLogger(__name__)

SIGNED_OUT = 4003  # close code: the person signed out; the page reconnects as whoever it now is
GROUP = "chat.signouts"
REJOIN_S = 3600  # group membership expires on channels-redis (a day by default): renew it hourly

sockets = defaultdict(set)  # user id -> this process's open consumers of that user
listeners = {}  # event loop -> its listener task


def register(user_id, consumer):
    """Remember a signed-in socket, and make sure this process hears sign-outs from the others."""
    sockets[user_id].add(consumer)
    layer = shared_layer()
    loop = asyncio.get_running_loop()
    if layer is not None and loop not in listeners:
        listeners[loop] = loop.create_task(listen(layer))


def unregister(user_id, consumer):
    """Forget a socket that closed."""
    mine = sockets.get(user_id)
    if mine is not None:
        mine.discard(consumer)
        if not mine:
            del sockets[user_id]


async def close_sockets(user_id):
    """Close this process's sockets of `user_id`."""
    for consumer in list(sockets.get(user_id, ())):
        await consumer.close(code=SIGNED_OUT)


async def signed_out(user_id):
    """Close the person's sockets here and, through the shared layer, on every other process."""
    layer = shared_layer()
    if layer is None:
        await close_sockets(user_id)
    else:
        await layer.group_send(GROUP, {"type": "chat.signout", "user": user_id})


async def listen(layer):
    """Close the sockets named by each sign-out sent to GROUP, for as long as the process runs."""
    channel = await layer.new_channel(CHANNEL_PREFIX)
    joined = None  # loop time of the last group_add
    while True:
        try:
            if joined is None or asyncio.get_running_loop().time() - joined > REJOIN_S:
                await layer.group_add(GROUP, channel)
                joined = asyncio.get_running_loop().time()
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an idle receive times out; an outage must not end sign-outs
            log.debug("sign-out listener: receive failed: %s", exc.__class__.__name__)
            await asyncio.sleep(0.1)
            continue
        await close_sockets(message["user"])
