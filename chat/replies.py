"""Replies in flight: who watches each, and how another socket or another process finds it.

A Generation sends its frames to its watchers: the socket that asked for it, and any socket of the
same person that resumed it since (a reload, a reconnect, a second tab). A watcher on this process
is a direct ASGI send; one on another process is a channel-layer channel, fed by a queue and a task
of its own so the relay never waits for Redis. Each process answers for the replies it produces
through one channel of its own (the Hub), in the group `reply.<message id>` of each: only with a
layer shared between processes (channels-redis), and only three layer calls per reply (join,
announce to the followers of its conversation (chat.follows), leave).
"""

import asyncio
import logging
import sys

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from chat import follows, protocol

log = logging.getLogger(__name__)

in_flight = {}  # message id -> the Generation producing it on this process

# Every channel this process receives on (its hub, its watching sockets, its sign-out listener) has
# the same prefix. channels-redis lets one receive at a time read Redis for all of a layer's channels,
# but reads only the key of its own channel's prefix: a receive on "a.…!x" that holds that turn blocks
# for good a receive on "b.…!y", whose messages wait in another key. (This is what broke watching a
# reply on another process once that process had a hub of its own.)
CHANNEL_PREFIX = "specific"  # channels-redis's default, so Channels' own consumer channels would share it too


def group_of(message_id):
    return f"reply.{message_id}"


class LocalWatcher:
    """A socket on this process: frames go straight to its ASGI send."""

    __slots__ = ("send",)

    def __init__(self, send):
        self.send = send

    async def __call__(self, text):
        await self.send({"type": "websocket.send", "text": text})

    def close(self):
        """Called once the reply has sent its last frame."""


class RemoteWatcher:
    """A socket on another process, reached through its consumer's channel, in order and without blocking."""

    __slots__ = ("layer", "channel", "message_id", "queue", "task", "on_lost")

    def __init__(self, layer, channel, message_id, on_lost):
        self.layer, self.channel, self.message_id, self.on_lost = layer, channel, message_id, on_lost
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self.pump())

    async def __call__(self, text):
        self.queue.put_nowait(text)

    def close(self):
        self.queue.put_nowait(None)

    async def pump(self):
        """Forward queued frames to the watcher's channel; a channel that is gone drops the watcher."""
        while (text := await self.queue.get()) is not None:
            try:
                await self.layer.send(self.channel, {"type": "reply.frame", "text": text})
            except Exception as exc:  # noqa: BLE001 - ChannelFull, or the layer is down: this watcher is lost
                log.info("dropping remote watcher %s: %s", self.channel, exc.__class__.__name__)
                self.on_lost(self)
                return
        try:
            await self.layer.send(self.channel, {"type": "reply.end", "message": self.message_id})
        except Exception as exc:  # noqa: BLE001 - the watcher went away first
            log.info("remote watcher %s gone before the end: %s", self.channel, exc.__class__.__name__)


class Watched:
    """The watchers of a Generation: attach from a seq, detach, and the grace period when none is left."""

    __slots__ = ()

    def catchup(self, after):
        """Return the `catchup` frame with the text sent after frame `after` (the seq a socket has)."""
        after = min(max(0, after), self.seq)
        start = self.offsets[after - 1] if after else 0
        text = "".join(self.text)[start:self.sent_len]
        turn = self.turn
        return protocol.catchup(turn.conversation_id, turn.message_id, turn.call.model, after, self.seq, text)

    async def attach(self, send, after):
        """Let a socket of this process watch from frame `after` on; return False if it is too late."""
        if self.finishing or self.turn is None:
            return False
        watcher = self.watching(send)
        if watcher is not None:  # it watches already (a page that saw a gap): just the catch-up
            await watcher(self.catchup(after))
            return True
        watcher = LocalWatcher(send)
        self.watchers.append(watcher)
        self.returned()
        try:
            await watcher(self.catchup(after))  # no frame can come between: the ASGI send does not yield
        except Exception:
            self.drop(watcher)
            raise
        return True

    def watching(self, send):
        """Return the watcher of this process's socket `send`, if it watches."""
        for watcher in self.watchers:
            if isinstance(watcher, LocalWatcher) and watcher.send is send:
                return watcher
        return None

    def attach_remote(self, layer, channel, after):
        """Let a socket of another process watch from frame `after` on; return False if it is too late."""
        if self.finishing or self.turn is None:
            return False
        watcher = RemoteWatcher(layer, channel, self.turn.message_id, self.drop)
        watcher.queue.put_nowait(self.catchup(after))
        self.watchers.append(watcher)
        self.returned()
        return True

    def detach(self, send):
        """A socket of this process stopped watching (it closed)."""
        watcher = self.watching(send)
        if watcher is not None:
            self.drop(watcher)

    def detach_remote(self, channel):
        for watcher in self.watchers:
            if isinstance(watcher, RemoteWatcher) and watcher.channel == channel:
                watcher.close()
                self.drop(watcher)
                return

    def drop(self, watcher):
        """Forget a watcher; with nobody left, end the reply now or after CHAT_RESUME_GRACE_S."""
        if watcher not in self.watchers:
            return
        self.watchers.remove(watcher)
        if self.watchers or self.finishing:
            return
        loop = asyncio.get_running_loop()
        self.left = (loop.time(), self.call.pieces if self.call is not None and self.first_at is not None else 0,
                     self.first_at is not None)
        grace = settings.CHAT_RESUME_GRACE_S
        if grace <= 0:
            self.cancel("disconnect")
        elif self.grace is None:
            self.grace = loop.call_later(grace, self.grace_over)

    def returned(self):
        self.left = None
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None

    def grace_over(self):
        self.grace = None
        if not self.watchers:
            self.cancel("disconnect")



def shared_layer():
    """Return the channel layer if it reaches other processes (channels-redis), else None."""
    layer = get_channel_layer()
    return None if layer is None or isinstance(layer, InMemoryChannelLayer) else layer


class Hub:
    """This process's answers about its replies in flight (resume, stop, unwatch), and its ear for the
    replies started elsewhere in the conversations its sockets follow (one per event loop)."""

    _hubs = {}
    REJOIN_S = 3600  # group membership expires on channels-redis (a day by default): renew it hourly

    def __init__(self, loop, layer):
        self.loop, self.layer = loop, layer
        self.channel = None
        self.ready = None
        self.task = self.renewer = None
        self.followed = {}  # conversation id -> loop time its group was last joined
        self.membership = asyncio.Lock()  # group adds and discards in the order their follows came

    @classmethod
    def get(cls):
        """Return this loop's hub, or None when no other process can ask."""
        layer = shared_layer()
        if layer is None:
            return None
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None:
            hub = cls._hubs[loop] = cls(loop, layer)
            hub.ready = loop.create_task(hub.open())
        return hub

    async def close(self, patience=10.0):
        """Stop listening and renewing, and forget this loop's hub.

        The cancellation is repeated until the tasks end: on Redis one can be lost. Seen in the test
        suite: a cancelled receive still waiting inside redis-py's `call_with_retry` (redis 8.1) with
        `cancelling()` at 1 to 3, so its read was retried instead of ending (the likely way: its read
        timeout, an `asyncio.timeout`, firing in the same turn as the cancel, which Python 3.11 turns
        into a TimeoutError that redis-py retries).
        """
        if Hub._hubs.get(self.loop) is self:
            del Hub._hubs[self.loop]
        tasks = [task for task in (self.ready, self.task, self.renewer) if task is not None]
        deadline = self.loop.time() + patience
        while pending := [task for task in tasks if not task.done()]:
            if self.loop.time() > deadline:
                log.warning("reply hub: %d task(s) did not end when cancelled", len(pending))
                return
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.2)

    async def open(self):
        self.channel = await self.layer.new_channel(CHANNEL_PREFIX)
        self.task = self.loop.create_task(self.listen())
        self.renewer = self.loop.create_task(self.keep_joined())

    async def join(self, message_id):
        """Answer for `message_id` from now on."""
        try:
            await self.ready
            await self.layer.group_add(group_of(message_id), self.channel)
        except Exception:  # noqa: BLE001 - without the layer only this process can resume it
            log.exception("cannot announce reply %s on the channel layer", message_id)

    async def leave(self, message_id):
        try:
            await self.ready
            await self.layer.group_discard(group_of(message_id), self.channel)
        except Exception:  # noqa: BLE001 - the group expires by itself
            log.exception("cannot withdraw reply %s from the channel layer", message_id)

    async def announce(self, generation):
        """Answer for `generation` from now on, then tell the other processes' followers of its conversation."""
        await self.join(generation.turn.message_id)
        message = {**follows.announcement(generation), "origin": self.channel}
        try:
            await self.layer.group_send(follows.group_of(generation.turn.conversation_id), message)
        except Exception:  # noqa: BLE001 - followers elsewhere see the reply when they next resume
            log.exception("cannot announce reply %s to its conversation", generation.turn.message_id)

    def follow(self, conversation_id):
        """Join or leave `conversation_id`'s group, as this process's followers of it now need."""
        self.loop.create_task(self.sync(conversation_id))

    async def sync(self, conversation_id):
        group = follows.group_of(conversation_id)
        async with self.membership:
            try:
                await self.ready
                if conversation_id in follows.followers:
                    await self.layer.group_add(group, self.channel)  # again on every follow: renews it
                    self.followed[conversation_id] = self.loop.time()
                elif self.followed.pop(conversation_id, None) is not None:
                    await self.layer.group_discard(group, self.channel)
            except Exception:  # noqa: BLE001 - followers here see replies started elsewhere when they resume
                log.exception("cannot follow conversation %s on the channel layer", conversation_id)

    def renew(self):
        """Join again the groups joined over REJOIN_S ago (channels-redis forgets members after a day)."""
        now = self.loop.time()
        for conversation_id, joined in list(self.followed.items()):
            if now - joined >= self.REJOIN_S:
                self.follow(conversation_id)

    async def keep_joined(self):
        # On a timer, not in listen(): channels-redis's receive() returns only with a message, and a tab
        # may follow a quiet conversation for longer than the group's expiry.
        while True:
            await asyncio.sleep(self.REJOIN_S / 2)
            self.renew()

    async def listen(self):
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage must not end the hub
                if asyncio.current_task().cancelling():
                    # The layer turned the cancellation into another error (its clean-up failing, a
                    # retry timing out): the hub is being closed, not Redis failing.
                    raise asyncio.CancelledError from exc
                log.debug("reply hub: receive failed: %s", exc.__class__.__name__)
                await asyncio.sleep(0.1)  # Redis is down or slow: try again soon, not in a tight loop
                continue
            try:
                self.handle(message)
            except Exception:  # noqa: BLE001 - one bad message must not end the hub
                log.exception("reply hub: cannot handle %r", message.get("type"))

    def handle(self, message):
        generation = in_flight.get(message.get("message"))
        kind = message.get("type")
        if kind == "conversation.reply":
            if message.get("origin") != self.channel:  # this process told its own followers at once
                follows.tell(message)
            return
        if kind == "reply.unwatch":
            if generation is not None:
                generation.detach_remote(message["reply_to"])
            return
        if generation is None or generation.owner.key != message.get("owner"):
            if kind == "reply.watch":
                self.loop.create_task(self.layer.send(message["reply_to"], {"type": "reply.gone",
                                                                            "message": message.get("message")}))
            return
        if kind == "reply.watch":
            if not generation.attach_remote(self.layer, message["reply_to"], message.get("after", 0)):
                self.loop.create_task(self.layer.send(message["reply_to"], {"type": "reply.gone",
                                                                            "message": message["message"]}))
        elif kind == "reply.stop":
            generation.cancel("stop", message.get("seq"))


def register(generation):
    """Make a reply findable while it is in flight (this process; others through the hub), and tell
    the pages that show its conversation (chat.follows) that it started."""
    in_flight[generation.turn.message_id] = generation
    watch_for_shutdown()
    follows.tell(follows.announcement(generation), started_by=generation)
    hub = Hub.get()
    if hub is not None:
        generation.hub = hub
        hub.loop.create_task(hub.announce(generation))


def unregister(generation):
    message_id = generation.turn.message_id
    if in_flight.get(message_id) is generation:
        del in_flight[message_id]
    if generation.hub is not None:
        generation.hub.loop.create_task(generation.hub.leave(message_id))


# --- graceful shutdown ----------------------------------------------------------------------

_shutdown_hooked = False


def watch_for_shutdown():
    """Under daphne, finish or store the replies in flight, then close the upstream client, before the
    process exits (once per process)."""
    global _shutdown_hooked
    if _shutdown_hooked:
        return
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return
    from twisted.internet import defer

    _shutdown_hooked = True
    # "before": in the "during" phase the reactor stops the event loop first, and nothing more runs.
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))
    )


async def shutdown():
    """Let the replies in flight finish or store them, then close the upstream client and its connections."""
    from chat.providers.http import close_at_shutdown

    await drain()
    await close_at_shutdown()


async def drain(timeout=None):
    """Let the replies in flight finish for up to CHAT_SHUTDOWN_TIMEOUT, then end the rest, stored."""
    from chat.relay import Ticker

    timeout = settings.CHAT_SHUTDOWN_TIMEOUT if timeout is None else timeout
    generations = {*in_flight.values(), *Ticker.get().active}
    tasks = {g.task for g in generations if g.task is not None and not g.task.done()}
    if not tasks:
        return
    log.info("shutting down: %d replies in flight get %g s to finish", len(tasks), timeout)
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for generation in generations:
        generation.cancel("shutdown")
    if pending:
        await asyncio.wait(pending, timeout=30)
