"""The chat websocket: frames in, one relayed generation at a time out, and the replies it resumed."""

import asyncio
import functools
import json
import logging

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import caps, follows, limits, markdown, protocol, replies, signouts, turns
from chat.addresses import client_address
from chat.middleware import in_own_context
from chat.relay import Generation
from chat.turns import Owner
from chatsite.routing import returns_awaitable

log = logging.getLogger(__name__)

NO_SESSION = 4001  # close code: the socket came without a session or an account (load the page first)
# (signouts.SIGNED_OUT, 4003: the person signed out elsewhere; the page reconnects as whoever it now is)
ANSWER_S = 1.5  # how long a reply on another process has to answer a `resume` before the database is asked
ASKS = 3  # times it is asked before a reply still `streaming` in the database is taken as lost
TOO_MANY_SOCKETS = 4029  # close code: this person or address has CHAT_MAX_SOCKETS_PER_… sockets open
CRASHED = 1011  # close code: the server failed handling a frame (the reply in flight ended first)


class ChatConsumer(AsyncWebsocketConsumer):
    # A socket talks to nobody but its own browser: no channel-layer subscription (which would cost
    # a task per socket, and with Redis a blocking receive per socket). One is made only when the
    # socket resumes a reply produced on another process (`listen`).
    channel_layer_alias = None
    generation = None
    owner = None
    channel = None  # this socket's channel on the shared layer, once it watches a reply elsewhere
    listener = None
    socket_ticket = None
    max_inflight = None  # the person's own cap (UserLimits), when they have one
    following = None  # the conversation this socket's page shows (`follow`), told of replies started elsewhere

    async def connect(self):
        """Called when a WebSocket connection is opened: accept a person with a session or an account."""
        user = self.scope.get("user")
        session = self.scope.get("session")
        session_key = session.session_key if session is not None else None
        await self.accept()  # before closing, so the browser sees the close code, not a failed handshake (1006)
        signed_in = user is not None and user.is_authenticated
        if not (signed_in or (session_key and not settings.CHAT_REQUIRE_LOGIN)):
            await self.close(code=NO_SESSION)
            return
        self.owner = Owner(user, session_key or "", client_address(self.scope))
        # The request's headers (~20 tuples, ~1 KB) are read by nothing once the address is known:
        # the socket's own scope drops them (its copy: the server's list is not touched).
        self.scope["headers"] = ()
        if signed_in:
            signouts.register(user.pk, self)
        self.watched = {}  # message id -> the local Generation it watches, or None for one on another process
        self.asked = {}  # message id -> (timer, times asked): replies elsewhere that have not answered yet
        try:
            self.socket_ticket = caps.open_socket(self.owner)
        except caps.Full as exc:
            await self.send_error(exc)
            await database_sync_to_async(limits.count_once)("busy", exc.scope, self.scope_key(exc.scope))
            await self.close(code=TOO_MANY_SOCKETS)
            return
        if self.owner.user_id:
            allowance = await in_own_context(database_sync_to_async(limits.Allowance.of)(self.owner))
            self.max_inflight = allowance.max_inflight

    @classmethod
    def as_asgi(cls, **initkwargs):
        """Channels' `as_asgi`, as a plain callable returning the consumer's awaitable: no coroutine
        frame of its own waits in the socket's task (chatsite/routing.py)."""

        @returns_awaitable
        def app(scope, receive, send):
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls
        app.consumer_initkwargs = initkwargs
        functools.update_wrapper(app, cls, updated=())
        return app

    def scope_key(self, scope):
        return self.owner.key if scope == "person" else self.owner.address

    async def __call__(self, scope, receive, send):
        """Handle the socket's events one after another until it closes.

        Channels' own loop (`await_many_dispatch`) keeps a receive task and an `asyncio.wait` per
        socket, for sockets that also listen on the channel layer; this one listens only to its
        browser (`channel_layer_alias` is None), so it awaits `receive` itself: a task and its
        waiters fewer for every open socket.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message):
        """Handle one ASGI event; if handling it fails, end the reply in flight before the socket goes.

        Unlike Channels' dispatch, no `aclose_old_connections()` first (nor after a disconnect): that
        is a thread hand-off per frame, and this consumer touches the database only through
        `database_sync_to_async`, which closes stale connections around every call itself.
        """
        try:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            # Without this the generation would run on upstream, billed, with nobody reading it.
            log.exception("chat consumer failed on %s", message.get("type"))
            if self.in_flight:
                self.generation.cancel("disconnect")
                await asyncio.wait([self.generation.task])
            await self.disconnect(CRASHED)
            await self.close(code=CRASHED)
            raise StopConsumer from None

    async def receive(self, text_data=None, bytes_data=None):
        """Called with each frame from the browser: start a reply, stop one, or resume those in flight."""
        try:
            frame = protocol.parse(text_data)
        except protocol.FrameError as exc:
            return await self.send_error(exc)
        if frame["type"] == "stop":
            return await self.stop(frame["message"], frame["seq"])
        if frame["type"] == "resume":
            return await self.resume(frame["conversation"], frame["have"])
        if frame["type"] == "follow":
            return await self.follow(frame["conversation"])
        if self.in_flight:
            return await self.send_error(protocol.ProtocolError(
                "A reply is already being generated; stop it or wait for it.", "busy"))
        try:
            ticket = caps.start_reply(self.owner, self.max_inflight)
        except caps.Full as exc:
            await database_sync_to_async(limits.count_once)("busy", exc.scope, self.scope_key(exc.scope), frame["model"])
            return await self.send_error(exc)
        # The relay gets the raw ASGI send, not self.send: it builds each frame's message itself, so
        # a frame skips Channels' two send wrappers on the per-token path, and a Generation needs no
        # consumer (the relay can be driven, and tested, with any ASGI send callable).
        self.generation = Generation(self.base_send, self.owner, frame)
        self.generation.start().add_done_callback(lambda _: caps.finish_reply(ticket))  # after any grace period

    @property
    def in_flight(self):
        return self.generation is not None and not self.generation.task.done()

    # --- stop ---------------------------------------------------------------------------------

    async def stop(self, message_id=None, seq=None):
        """Stop a reply (this socket's, or the ones it watches), and wait until it is stored and `done` is sent.

        `seq` is the last delta the page shows of `message_id`: the reply is stored as far as that.
        """
        if message_id is None:
            if self.in_flight:
                targets = [self.generation]
            else:
                targets = list(self.watched)
        else:
            targets = [message_id]
        for target in targets:
            generation = target if isinstance(target, Generation) else replies.in_flight.get(target)
            if generation is not None:
                if generation.owner.key == self.owner.key:
                    generation.cancel("stop", seq)
                    await asyncio.wait([generation.task])
            elif (layer := replies.shared_layer()) is not None:
                await layer.group_send(replies.group_of(target),
                                       {"type": "reply.stop", "message": target, "owner": self.owner.key,
                                        "seq": seq})

    # --- follow -------------------------------------------------------------------------------

    async def follow(self, conversation_id):
        """Hear of the replies started in the person's conversation from now on (None: in none)."""
        if conversation_id is not None and not await turns.owns(self.owner, conversation_id):
            await self.send_error(protocol.ProtocolError("No such conversation.", "not_found"))
            conversation_id = None
        if conversation_id == self.following:
            return
        if self.following is not None:
            follows.unfollow(self, self.following, replies.Hub.get())
        self.following = conversation_id
        if conversation_id is not None:
            follows.follow(self, conversation_id, replies.Hub.get())

    # --- resume -------------------------------------------------------------------------------

    async def resume(self, conversation_id, have):
        """Send each reply in flight in the conversation from the seq the page has, then its live deltas;
        `done` for each reply the page asked about that has ended; then `resumed`."""
        streaming, finished = await turns.replies_of(self.owner, conversation_id, list(have))
        for stored in finished:
            await self.send_done(stored)
        for message_id in streaming:
            await self.watch(message_id, have.get(message_id, 0))
        await self.send(text_data=protocol.resumed(conversation_id, streaming))

    async def watch(self, message_id, after):
        generation = replies.in_flight.get(message_id)
        if generation is None and replies.shared_layer() is None:
            # Only this process produces replies: give one just being registered a moment.
            for _ in range(10):
                await asyncio.sleep(0.05)
                if (generation := replies.in_flight.get(message_id)) is not None:
                    break
        if generation is not None:
            if generation.owner.key != self.owner.key:
                return
            if await generation.attach(self.base_send, after):
                self.watched[message_id] = generation
                return
            if generation.watching(self.base_send):
                return  # it is being stored; its `done` comes to this socket too
            await asyncio.wait([generation.task])
        elif replies.shared_layer() is not None:
            return await self.ask(message_id, after)
        await self.send_stored(message_id)

    async def send_stored(self, message_id):
        """Send the `done` of a reply that is no longer in flight, from the database."""
        stored = await turns.stored_of(self.owner, message_id)
        if stored is None:  # still `streaming`, and nobody produces it: its process died
            stored = await turns.lost(self.owner, message_id)
        if stored is not None:
            await self.send_done(stored)

    async def ask(self, message_id, after, times=1):
        """Ask the process producing `message_id` to send it here from frame `after` on."""
        layer = replies.shared_layer()
        if self.channel is None:
            self.channel = await layer.new_channel(replies.CHANNEL_PREFIX)
            self.listener = asyncio.get_running_loop().create_task(self.listen(layer))
        self.watched[message_id] = None
        timer = asyncio.get_running_loop().call_later(
            ANSWER_S, lambda: asyncio.ensure_future(self.unanswered(message_id, after)))
        self.asked[message_id] = (timer, times)
        await layer.group_send(replies.group_of(message_id), {
            "type": "reply.watch", "message": message_id, "after": after, "owner": self.owner.key,
            "reply_to": self.channel,
        })

    async def unanswered(self, message_id, after):
        """Nobody answered for a reply elsewhere: it ended (send its `done`), or ask again."""
        timer, times = self.asked.pop(message_id, (None, ASKS))
        if timer is not None:
            timer.cancel()
        self.watched.pop(message_id, None)
        if await turns.stored_of(self.owner, message_id) is None and times < ASKS:
            return await self.ask(message_id, after, times + 1)
        await self.send_stored(message_id)

    async def listen(self, layer):
        """Forward the frames of replies on other processes to this socket."""
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - channels-redis times out an idle receive: receive again
                log.debug("watch channel receive: %s", exc.__class__.__name__)
                await asyncio.sleep(0.1)
                continue
            kind = message["type"]
            if kind == "reply.frame":
                text = message["text"]
                if self.asked and text.startswith(protocol.CATCHUP_HEAD):
                    timer, _ = self.asked.pop(json.loads(text)["message"], (None, 0))
                    if timer is not None:
                        timer.cancel()
                await self.send(text_data=text)
            elif kind == "reply.end":
                self.watched.pop(message.get("message"), None)
            elif kind == "reply.gone":
                await self.unanswered(message["message"], 0)

    # --- the socket closes ----------------------------------------------------------------------

    async def websocket_disconnect(self, message):
        """The socket closed (this consumer is in no group): handle it, then end the consumer."""
        await self.disconnect(message["code"])
        raise StopConsumer

    async def disconnect(self, code):
        """Called when the socket closes: leave the replies it watched (each ends after the grace period
        if nobody else watches it; at once, with its record written, when CHAT_RESUME_GRACE_S is 0)."""
        if self.owner is not None and self.owner.user_id:
            signouts.unregister(self.owner.user_id, self)
        if self.socket_ticket is not None:
            caps.close_socket(self.socket_ticket)
            self.socket_ticket = None
        if self.following is not None:
            follows.unfollow(self, self.following, replies.Hub.get())
            self.following = None
        ending = []
        for message_id, generation in getattr(self, "watched", {}).items():
            if generation is not None:
                generation.detach(self.base_send)
                ending.append(generation)
            elif self.channel is not None:
                await replies.shared_layer().group_send(replies.group_of(message_id), {
                    "type": "reply.unwatch", "message": message_id, "reply_to": self.channel})
        for timer, _ in getattr(self, "asked", {}).values():
            timer.cancel()
        if self.listener is not None:
            self.listener.cancel()
        if self.in_flight:
            self.generation.detach(self.base_send)
            ending.append(self.generation)
        if settings.CHAT_RESUME_GRACE_S <= 0:
            tasks = [g.task for g in ending if g.task is not None and not g.task.done() and not g.watchers]
            if tasks:
                await asyncio.wait(tasks)

    async def send_error(self, error):
        """Send the `error` frame of a ProtocolError; the socket stays open."""
        await self.send(text_data=protocol.error(error.code, str(error)))

    async def send_done(self, stored):
        """Send the `done` frame of a stored reply (turns.Stored)."""
        await self.send(text_data=protocol.done(stored, await markdown.arender(stored.text)))
