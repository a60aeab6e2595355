"""The one seam to the network: a shared httpx client per event loop, and requests with retries."""

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
import weakref

import httpx
from django.conf import settings

from chat.providers import UpstreamError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
SHARDS = 8  # connection pools behind the shared client
_clients = weakref.WeakKeyDictionary()


class ShardedTransport(httpx.AsyncBaseTransport):
    """A few small connection pools behind one client; each request takes the least busy pool.

    httpcore scans every connection of its pool (a syscall for each idle one) whenever a request
    starts or ends, so one pool holding hundreds of streams costs more per request than the request
    itself. At low load the first pool is always the least busy, so keep-alive connections are
    reused as with a single pool.
    """

    def __init__(self, shards, **options):
        self.transports = [httpx.AsyncHTTPTransport(**options) for _ in range(shards)]
        self.busy = [0] * shards

    async def handle_async_request(self, request):
        """Send the request through the least busy pool; the pool is freed when the response closes."""
        shard = self.busy.index(min(self.busy))
        self.busy[shard] += 1
        try:
            response = await self.transports[shard].handle_async_request(request)
        except BaseException:
            self.busy[shard] -= 1
            raise
        response.stream = LeasedStream(response.stream, self.busy, shard)
        return response

    async def aclose(self):
        """Close every pool."""
        for transport in self.transports:
            await transport.aclose()


class LeasedStream(httpx.AsyncByteStream):
    """A response body that gives its pool back when closed (iterated directly: no extra layer per read)."""

    def __init__(self, stream, busy, shard):
        self.stream, self.busy, self.shard = stream, busy, shard

    def __aiter__(self):
        return self.stream.__aiter__()

    async def aclose(self):
        try:
            await self.stream.aclose()
        finally:
            if self.busy is not None:
                self.busy[self.shard] -= 1
                self.busy = None


def client():
    """Return this event loop's shared AsyncClient (pooled, keep-alive connections)."""
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is None or shared.is_closed:
        # Timeouts: the relay's watchdog enforces first-token and stall limits; httpx's read
        # timeout is only a backstop for a socket that never answers at all.
        backstop = max(settings.CHAT_FIRST_TOKEN_TIMEOUT, settings.CHAT_STALL_TIMEOUT) + 5
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=16, keepalive_expiry=30)
        shared = httpx.AsyncClient(
            timeout=httpx.Timeout(backstop, connect=settings.CHAT_CONNECT_TIMEOUT),
            transport=ShardedTransport(SHARDS, limits=limits),
        )
        _clients[loop] = shared
    return shared


def retry_delay(attempt, retry_after=None):
    """Return seconds to wait before retry number `attempt` (1-based): Retry-After, else backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, settings.CHAT_RETRY_MAX_WAIT)
    base = settings.CHAT_RETRY_BACKOFF * 2 ** (attempt - 1)
    return min(random.uniform(base / 2, base * 1.5), settings.CHAT_RETRY_MAX_WAIT)


def parse_retry_after(value):
    """Return the seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(body, status):
    """Return the readable message in an upstream's error body (OpenAI and Anthropic shapes)."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()[:300] if isinstance(body, bytes) else str(body)[:300]
        return f"HTTP {status}: {text}" if text else f"HTTP {status}"
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return f"HTTP {status}: {error.get('message') or error.get('type') or 'error'}"
    if isinstance(error, str):
        return f"HTTP {status}: {error}"
    return f"HTTP {status}"


@contextlib.asynccontextmanager
async def post(call, url, payload, headers):
    """Send the request, retrying before any reply has begun; yield the successful streaming response.

    Connect errors, connections dropped before an answer, and 429/5xx answers are retried up to
    CHAT_RETRIES times with exponential backoff and jitter, honouring Retry-After. Any other
    failure raises UpstreamError.
    """
    http = client()
    while True:
        retry_after, failure = None, None
        try:
            request = http.build_request("POST", url, json=payload, headers=headers)
            response = await http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            failure = UpstreamError(f"Could not connect to the upstream: {exc.__class__.__name__}")
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # The connection dropped before any reply began (often a stale keep-alive connection).
            failure = UpstreamError(
                f"The upstream closed the connection without answering: {exc.__class__.__name__}"
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Upstream request failed: {exc.__class__.__name__}") from exc
        else:
            if response.status_code < 400:
                call.opened = True
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            body = await _read_error(response)
            message = error_message(body, response.status_code)
            code = "rate_limited" if response.status_code == 429 else "upstream_error"
            failure = UpstreamError(message, code=code, status=response.status_code)
            if response.status_code not in RETRY_STATUSES:
                raise failure
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        if call.retries >= settings.CHAT_RETRIES:
            raise failure
        call.retries += 1
        delay = retry_delay(call.retries, retry_after)
        log.info("retrying %s in %.2fs after: %s", call.model, delay, failure)
        await asyncio.sleep(delay)


async def _read_error(response):
    """Return an error response's body (at most 64 KiB), closing it."""
    try:
        body = b""
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > 65536:
                break
        return body
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()
