"""The relay: one task per reply, from the upstream's stream to the browser's frames to the record.

The per-token path is `Generation.relay`: a clock read, a string
append or one frame to each watcher (usually one socket), nothing logged and nothing written to
the database. Deltas after the first
are coalesced; a per-loop `Ticker` sends what waited and enforces the first-token and stall
timeouts, so no stream owns a timer of its own.
"""

import asyncio
import contextlib
import logging
import weakref

import httpx
from django.conf import settings

from chat import markdown, protocol, replies, turns
from chat.limits import Refused
from chat.providers import UpstreamError, provider_for, timeout_message

log = logging.getLogger(__name__)

_tickers = weakref.WeakKeyDictionary()


class Slots:
    """At most CHAT_MAX_CONCURRENT generations at once; the rest wait their turn, up to CHAT_QUEUE_TIMEOUT.

    A finished generation hands its slot straight to the longest waiter rather than freeing it, so a
    newcomer cannot take it between the two and make the waiter time out.
    """

    def __init__(self, loop):
        self.loop = loop
        self.taken = 0  # running generations, and waiters a finished one handed its slot to
        self.waiters = []  # futures queued for a slot, oldest first

    async def acquire(self):
        """Wait up to CHAT_QUEUE_TIMEOUT for a slot; return whether one was had."""
        if self.taken < settings.CHAT_MAX_CONCURRENT and not self.waiters:
            self.taken += 1
            return True
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, settings.CHAT_QUEUE_TIMEOUT)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def release(self):
        """Hand the slot to the longest-waiting request, or free it."""
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.taken -= 1


class Ticker:
    """This event loop's shared clock: flushes coalesced text and times out stalls."""

    def __init__(self, loop):
        self.loop = loop
        self.active = set()  # every Generation running on this loop
        self.pending = {}  # Generations with text waiting for their next frame (ordered)
        self.slots = Slots(loop)
        self.task = None

    @classmethod
    def get(cls):
        """Return the running loop's ticker."""
        loop = asyncio.get_running_loop()
        ticker = _tickers.get(loop)
        if ticker is None:
            ticker = _tickers[loop] = cls(loop)
        return ticker

    def add(self, generation):
        """Register a running generation with the ticker."""
        self.active.add(generation)
        self._wake()

    def discard(self, generation):
        """Forget a finished generation and give up its slot."""
        self.active.discard(generation)
        self.pending.pop(generation, None)
        self.slots.release()

    def wait_flush(self, generation):
        """Queue a generation's text for the next tick."""
        self.pending[generation] = None

    def _wake(self):
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())

    async def _run(self):
        flush_s = settings.CHAT_FLUSH_MS / 1000
        ttft_s, stall_s = settings.CHAT_FIRST_TOKEN_TIMEOUT, settings.CHAT_STALL_TIMEOUT
        tick = max(0.003, flush_s / 3) if flush_s else 0.003
        sweep_every = max(0.02, min(1.0, ttft_s / 4, stall_s / 4))
        next_sweep = self.loop.time() + sweep_every
        while self.active:
            await asyncio.sleep(tick)
            now = self.loop.time()
            if self.pending:
                for generation in list(self.pending):
                    if now - generation.sent_at >= flush_s:
                        del self.pending[generation]
                        await generation.flush(now)
            if now >= next_sweep:
                next_sweep = now + sweep_every
                for generation in list(self.active):
                    generation.check_timeouts(now, ttft_s, stall_s)


class SocketClosed(Exception):
    """The browser's socket closed before the consumer heard of it."""


class Generation(replies.Watched):
    """One reply in flight: its upstream call, its frames to its watchers, and the record it leaves.

    Frames carry sequence numbers (`seq`, from 1); `offsets[n - 1]` is the length of the text sent
    up to frame n, so a socket that comes back with the seq it has gets exactly the rest.
    """

    __slots__ = ("watchers", "owner", "request", "call", "turn", "task", "ticker", "reason", "buffer", "text",
                 "started", "sent_at", "last_read", "first_at", "prefix", "announced", "finishing", "seq",
                 "sent_len", "offsets", "left", "grace", "hub", "cut")

    def __init__(self, send, owner, request):
        self.watchers = [replies.LocalWatcher(send)]  # who gets the frames; send: an ASGI send callable
        self.owner = owner
        self.request = request  # the validated `send` frame
        self.call = None
        self.turn = None
        self.task = None
        self.ticker = None
        self.reason = ""  # why it ended early: stop, disconnect, first_token_timeout, stall, shutdown
        self.buffer = []
        self.text = []  # every delta, for the stored reply
        self.started = self.sent_at = self.last_read = 0.0  # event-loop clock
        self.first_at = None
        self.prefix = ""
        self.announced = False
        self.finishing = False  # set once the reply is being stored: nothing may interrupt that
        self.seq = self.sent_len = 0
        self.offsets = []
        self.left = None  # when the last watcher left: (loop time, calls delivered so far)
        self.grace = None  # the timer that ends an unwatched reply
        self.hub = None
        self.cut = None  # on `stop`: the length of the text the person was shown, all that is stored

    def start(self):
        """Start relaying in a task of its own; return the task."""
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self.task

    def cancel(self, reason, seen=None):
        """End the reply early for `reason`; the upstream connection closes as the task unwinds.

        A `stop` keeps the text up to delta `seen` (the last the stopping page shows; by default all
        sent so far): text read from the upstream after that is neither sent nor stored.

        Before the reply is stored and announced the task is left to reach that point, and once it
        is being stored and its `done` sent it is left to finish, so that every accepted `send` gets
        exactly one `start`, one `done` and one record whatever arrives when.
        """
        if self.task is not None and not self.task.done() and not self.finishing:
            self.reason = self.reason or reason
            if self.reason == "stop" and self.cut is None:
                self.cut = self.offsets[seen - 1] if seen and seen <= self.seq else 0 if seen == 0 else self.sent_len
            if self.call is not None:
                self.task.cancel()

    # --- the relay --------------------------------------------------------------------------

    def check_timeouts(self, now, ttft_s, stall_s):
        """Cancel the reply if its first token, or its next read, is overdue."""
        if self.call is None or self.reason:
            return
        if self.first_at is None and now - self.started > ttft_s:
            self.cancel("first_token_timeout")
        elif self.first_at is not None and now - self.last_read > stall_s:
            self.cancel("stall")

    async def run(self):
        """Relay the reply; whatever happens, store it, write its record and send `done`."""
        self.ticker = Ticker.get()
        loop = self.ticker.loop
        self.started = self.sent_at = self.last_read = loop.time()
        if not await self.ticker.slots.acquire():
            return await self.refuse(protocol.ProtocolError("The server is at capacity; try again in a moment.",
                                                            "busy"))
        self.ticker.add(self)
        error = None
        try:
            await self.begin()
            await self.relay(provider_for(self.call.model).stream(self.call), loop)
        except Refused as exc:
            return await self.refuse(exc)
        except asyncio.CancelledError:
            self.task.uncancel()  # our own cancel(), handled here: the rest runs uncancelled
            self.reason = self.reason or "disconnect"
            if self.reason in ("first_token_timeout", "stall"):
                error = UpstreamError(timeout_message(self.reason))
            elif self.reason == "shutdown":
                error = UpstreamError("The server restarted mid-reply; what arrived is kept.")
        except UpstreamError as exc:
            error = exc
        except httpx.HTTPError as exc:
            error = UpstreamError(f"The upstream connection failed: {exc.__class__.__name__}")
        except Exception as exc:  # noqa: BLE001 - the record must be written whatever went wrong
            log.exception("relay failed for %s", self.request["model"])
            error = UpstreamError(f"Internal error: {exc.__class__.__name__}")
        finally:
            self.ticker.discard(self)
            self.finishing = True
            if self.grace is not None:
                self.grace.cancel()
        try:
            if self.turn is not None:
                await self.finish(error)
            elif error is not None:
                await self.refuse(error)
        finally:
            if self.turn is not None:
                replies.unregister(self)
            for watcher in self.watchers:
                watcher.close()

    async def begin(self):
        """Store the person's message and the empty reply, then send `start`."""
        self.turn = await turns.start(self.owner, self.request)
        self.call = self.turn.call
        self.prefix = protocol.delta_head(self.turn.message_id)
        replies.register(self)
        await self.send_start()
        if self.reason:  # stopped, or the socket closed, while it was being stored
            raise asyncio.CancelledError

    async def send_start(self):
        """Send the `start` frame (once)."""
        if not self.announced:
            self.announced = True
            turn = self.turn
            await self.send_text(protocol.start(turn.conversation_id, turn.message_id, turn.call.model, turn.title))

    async def relay(self, stream, loop):
        """Send the first delta at once, then at most one frame per CHAT_FLUSH_MS."""
        flush_s = settings.CHAT_FLUSH_MS / 1000
        text_append, buffer_append = self.text.append, self.buffer.append
        async with contextlib.aclosing(stream):
            async for text in stream:
                now = self.last_read = loop.time()
                text_append(text)
                if self.first_at is None:
                    self.first_at = now
                    await self._send_now(text, now)
                elif now - self.sent_at >= flush_s:
                    buffer_append(text)
                    await self.flush(now)
                else:
                    buffer_append(text)
                    self.ticker.wait_flush(self)

    async def flush(self, now):
        """Send the text waiting in the buffer as one frame (none after a stop)."""
        if self.buffer and self.cut is None:
            text = "".join(self.buffer)
            self.buffer.clear()
            await self._send_now(text, now)

    async def _send_now(self, text, now):
        self.sent_at = now
        self.seq += 1
        self.sent_len += len(text)
        self.offsets.append(self.sent_len)
        await self.send_text(protocol.delta(self.prefix, self.seq, text))

    async def finish(self, error):
        """Send what is left, store the reply and its record, and send `done` (and `error`)."""
        ended = asyncio.get_running_loop().time()
        await self.flush(ended)
        ttft_ms = None if self.first_at is None else round((self.first_at - self.started) * 1000)
        left = self.left if self.reason == "disconnect" else None
        text = "".join(self.text)
        outcome = turns.Outcome(
            text=text if self.cut is None else text[:self.cut],
            reason=self.reason,
            error=error.record_text if error else "",
            ttft_ms=ttft_ms,
            duration_ms=round((ended - self.started) * 1000),
            delivered=self.call.pieces if self.first_at is not None else 0,
        )
        if left is not None:  # the abandonment is told as it was when the person left
            outcome.left_ms, outcome.delivered, outcome.left_streaming = (
                round((left[0] - self.started) * 1000), left[1], left[2])
        # Billing must survive a second cancellation (the server shutting down mid-write).
        stored = await asyncio.shield(turns.finish(self.turn, outcome))
        await self.send_start()
        if error is not None:
            # A plain message and a reference the person can quote: the record (found by its
            # request id in the admin) holds the upstream's own words, redacted.
            await self.send_text(protocol.error(error.code, str(error), ref=str(self.turn.request_id)))
        await self.send_text(protocol.done(stored, await markdown.arender(stored.text)))

    async def refuse(self, error):
        """Send the `error` frame of a request that did not start (a ProtocolError)."""
        await self.send_text(protocol.error(error.code, str(error)))

    async def send_text(self, text):
        """Send one text frame to every watcher; one whose socket closed under us is dropped."""
        for watcher in self.watchers if len(self.watchers) == 1 else tuple(self.watchers):
            try:
                await watcher(text)
            except Exception as exc:  # noqa: BLE001 - daphne/autobahn raise their own types for a closed connection
                log.debug("dropping a watcher of message %s: %s", self.turn and self.turn.message_id, exc)
                self.drop(watcher)

