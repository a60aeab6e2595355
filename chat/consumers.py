"""The chat websocket: frames in, one relayed generation at a time out."""

import asyncio
import json

from channels.generic.websocket import AsyncWebsocketConsumer

from chat import protocol
from chat.relay import Generation
from chat.turns import Owner

NO_SESSION = 4001  # close code: the socket came without a session or an account (load the page first)


class ChatConsumer(AsyncWebsocketConsumer):
    # A socket talks to nobody but its own browser: no channel-layer subscription (which would cost
    # a task per socket, and with Redis a blocking receive per socket).
    channel_layer_alias = None
    generation = None

    async def connect(self):
        """Called when a WebSocket connection is opened: accept a person with a session or an account."""
        user = self.scope.get("user")
        session = self.scope.get("session")
        session_key = session.session_key if session is not None else None
        await self.accept()  # before closing, so the browser sees the close code, not a failed handshake (1006)
        if not session_key and not (user is not None and user.is_authenticated):
            await self.close(code=NO_SESSION)
            return
        self.owner = Owner(user, session_key or "")

    async def receive(self, text_data=None, bytes_data=None):
        """Called with each frame from the browser: start a reply, or stop the one in flight."""
        try:
            frame = protocol.parse(text_data)
        except protocol.FrameError as exc:
            return await self.send_error(exc.code, str(exc))
        if frame["type"] == "stop":
            return await self.stop()
        if self.in_flight:
            return await self.send_error("busy", "A reply is already being generated; stop it or wait for it.")
        # The relay gets the raw ASGI send, not self.send: it builds each frame's message itself, so
        # a frame skips Channels' two send wrappers on the per-token path, and a Generation needs no
        # consumer (the relay can be driven, and tested, with any ASGI send callable).
        self.generation = Generation(self.base_send, self.owner, frame)
        self.generation.start()

    @property
    def in_flight(self):
        return self.generation is not None and not self.generation.task.done()

    async def stop(self):
        """Stop the reply in flight, if any, and wait until it is stored and `done` is sent."""
        await self.end_reply("stop")

    async def disconnect(self, code):
        """Called when the socket closes: end the reply in flight and wait for its record."""
        await self.end_reply("disconnect")

    async def end_reply(self, reason):
        """End the reply in flight, if any, for `reason`, and wait until its record is written."""
        if self.in_flight:
            self.generation.cancel(reason)
            await asyncio.wait([self.generation.task])

    async def send_error(self, code, message):
        """Send an `error` frame; the socket stays open."""
        await self.send(text_data=json.dumps({"type": "error", "code": code, "message": message}))
