"""One upstream request made for the API, a batch line or the benchmark: deltas out, timeouts, the end.

The chat page's relay owns frames, conversations and coalescing; this path has none of those. It
drives the same provider layer (`provider_for(model).stream(call)`: retries before the first
token, the shared connection pool) and enforces the same first-token and stall timeouts with one
timer per request that re-arms itself only when it fires, so a delta costs a clock read.
"""

import asyncio
import contextlib
import logging

import httpx
from django.conf import settings
from django.utils import timezone

from chat.providers import UpstreamError, provider_for, timeout_message

log = logging.getLogger(__name__)

TIMEOUTS = ("first_token_timeout", "stall")


class ClientGone(Exception):
    """The caller went away: its connection failed while a delta was being sent."""


class Exchange:
    """One upstream call in flight: its clock, its text, and why it ended."""

    __slots__ = ("call", "task", "timer", "loop", "started", "started_at", "first_at", "last_read", "ended",
                 "reason", "error", "text")

    def __init__(self, call):
        self.call = call
        self.task = self.timer = self.loop = None
        self.started = self.first_at = self.last_read = self.ended = None  # event-loop clock
        self.started_at = timezone.now()
        self.reason = ""  # why it ended early: disconnect, first_token_timeout, stall
        self.error = None  # an UpstreamError when it failed
        self.text = []

    async def run(self, deliver):
        """Relay the reply's deltas to `deliver` (awaited, once per network read); return the error or None.

        A CancelledError from `cancel()` ends the call cleanly (the upstream response is closed as the
        stream unwinds); any other cancellation is re-raised once the call is marked disconnected.
        """
        loop = self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.started = self.last_read = loop.time()
        self.timer = loop.call_later(settings.CHAT_FIRST_TOKEN_TIMEOUT, self._check)
        stream = provider_for(self.call.model).stream(self.call)
        text_append = self.text.append
        try:
            if self.reason:  # the caller left before the call began
                raise asyncio.CancelledError
            async with contextlib.aclosing(stream):
                async for text in stream:
                    now = self.last_read = loop.time()
                    if self.first_at is None:
                        self.first_at = now
                    text_append(text)
                    await deliver(text)
        except asyncio.CancelledError:
            if not self.reason:
                self.reason = "disconnect"
                self._end()
                raise
            if self.task.cancelling():
                self.task.uncancel()
            if self.reason in TIMEOUTS:
                self.error = UpstreamError(timeout_message(self.reason), code="timeout")
        except ClientGone:
            self.reason = "disconnect"
        except UpstreamError as exc:
            self.error = exc
        except httpx.HTTPError as exc:
            self.error = UpstreamError(f"The upstream connection failed: {exc.__class__.__name__}")
        except Exception as exc:  # noqa: BLE001 - the record must be written whatever went wrong
            log.exception("exchange failed for %s", self.call.model)
            self.error = UpstreamError(f"Internal error: {exc.__class__.__name__}")
        self._end()
        return self.error

    def cancel(self, reason):
        """End the call early for `reason` (the caller left, or a timeout); the upstream closes at once."""
        if not self.reason and self.ended is None:
            self.reason = reason
            if self.task is not None:
                self.task.cancel()

    def _check(self):
        """Cancel the call if its first token, or its next read, is overdue; else look again when it would be."""
        now = self.loop.time()
        if self.first_at is None:
            due, reason = self.started + settings.CHAT_FIRST_TOKEN_TIMEOUT, "first_token_timeout"
        else:
            due, reason = self.last_read + settings.CHAT_STALL_TIMEOUT, "stall"
        if now >= due:
            self.cancel(reason)
        else:
            self.timer = self.loop.call_at(due, self._check)

    def _end(self):
        self.ended = self.loop.time()
        if self.timer is not None:
            self.timer.cancel()

    @property
    def ttft_ms(self):
        return None if self.first_at is None else round((self.first_at - self.started) * 1000)

    @property
    def duration_ms(self):
        return round(((self.ended or self.loop.time()) - self.started) * 1000)

    @property
    def delivered(self):
        """Return the content events the caller received."""
        return self.call.pieces if self.first_at is not None else 0

