"""A page open on a conversation hears of every reply started in it, from any tab, on any process.

A socket follows the one conversation its page shows (the `follow` frame). When a reply starts,
each follower of its conversation that belongs to the same person, other than the socket that
sent it, gets a `reply` frame; the page then watches the reply through `resume`, the path a
reconnecting page takes. Followers on this process are told directly; those on other processes
through the channel layer group `conversation.<id>`, which each process's reply hub (chat.replies)
joins once for all of its followers of that conversation: one group per followed conversation per
process, and one `group_send` per reply started, only with a layer shared between processes.
"""

import asyncio
import logging
from collections import defaultdict

from chat import protocol

log = logging.getLogger(__name__)

followers = defaultdict(set)  # conversation id -> this process's consumers whose page shows it
_sending = set()  # the tasks sending `reply` frames, kept until done (the loop holds tasks weakly)


def group_of(conversation_id):
    return f"conversation.{conversation_id}"


def follow(consumer, conversation_id, hub=None):
    """Let `consumer` hear of the replies started in `conversation_id` (the person's: checked by the caller)."""
    followers[conversation_id].add(consumer)
    if hub is not None:
        hub.follow(conversation_id)


def unfollow(consumer, conversation_id, hub=None):
    """Stop telling `consumer` of the replies started in `conversation_id`."""
    mine = followers.get(conversation_id)
    if mine is None:
        return
    mine.discard(consumer)
    if not mine:
        del followers[conversation_id]
    if hub is not None:
        hub.follow(conversation_id)


def announcement(generation):
    """Return the message that tells followers of `generation`'s conversation that it started."""
    turn = generation.turn
    return {"type": "conversation.reply", "conversation": turn.conversation_id, "message": turn.message_id,
            "model": turn.call.model, "content": generation.request["content"], "owner": generation.owner.key}


def tell(message, started_by=None):
    """Send the `reply` frame of `message` to this process's followers of its conversation, but not to
    the socket whose Generation `started_by` it is."""
    frame = None
    for consumer in followers.get(message["conversation"], ()):
        if (started_by is not None and consumer.generation is started_by) or consumer.owner.key != message["owner"]:
            continue
        if frame is None:
            frame = protocol.reply(message["conversation"], message["message"], message["model"],
                                   message["content"])
        task = asyncio.get_running_loop().create_task(_send(consumer, frame))
        _sending.add(task)
        task.add_done_callback(_sending.discard)


async def _send(consumer, frame):
    try:
        await consumer.send(text_data=frame)
    except Exception as exc:  # noqa: BLE001 - the follower's socket closed under us: it unfollows as it goes
        log.debug("cannot tell a follower of a reply: %s", exc.__class__.__name__)
