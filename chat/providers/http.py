"""The one seam to the network: a shared httpx client per event loop, and requests with retries."""

import asyncio
import collections
import contextlib
import email.utils
import functools
import json
import logging
import random
import time
import weakref

import aiohttp
import httpx
import multidict
from aiohttp import client_proto
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from chat.providers import UpstreamError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_clients = weakref.WeakKeyDictionary()  # event loop -> its shared client
_closers = weakref.WeakKeyDictionary()  # event loop -> the parked generator that closes its client with it


class Transport(AiohttpTransport):
    """httpx-aiohttp's transport (aiohttp's connection pool and C parser under the httpx API).

    A response closed before its end closes its connection rather than pooling it (aiohttp's
    `should_close`). Errors surface as the httpx exceptions httpcore would raise, so the retry rules
    below read the same whichever transport is underneath. The body is a `Body`, also offered as
    `response.extensions["body"]` so the relay can read it without httpx's generator per read.
    """

    async def handle_async_request(self, request):
        """Send the request; raise httpx's exception for an aiohttp failure before the reply began."""
        try:
            response = await super().handle_async_request(request)
        except httpx.HTTPError as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectorError):
                raise httpx.ConnectError(str(cause), request=request) from cause
            if isinstance(cause, aiohttp.ConnectionTimeoutError):
                raise httpx.ConnectTimeout(str(cause), request=request) from cause
            if isinstance(cause, aiohttp.SocketTimeoutError):
                raise httpx.ReadTimeout(str(cause), request=request) from cause
            if isinstance(cause, aiohttp.ClientConnectionError):  # dropped before answering
                raise httpx.RemoteProtocolError(str(cause), request=request) from cause
            raise
        response.stream = response.extensions["body"] = Body(response.stream._aiohttp_response, request)
        # The body is sent: the request (kept by the response for its errors) need not keep the prompt.
        request.stream = SENT
        request._content = b""  # httpx's copy of a body given as bytes or json (Request.read())
        return response


SENT = httpx.ByteStream(b"")


async def release(response):
    """Close a response (its connection pooled or closed) and break httpx's response-stream cycle.

    httpx wraps the body in a `BoundAsyncStream` that refers back to the response (to time it): the
    two, and everything they hold (the `Body`, aiohttp's response, reader and buffers, the request),
    would outlive the reply as cyclic garbage, 22 objects a reply left for the collector, whose
    pauses stall every stream on the loop (docs/PERFORMANCE.md, "Cyclic garbage").
    Once the response is closed nothing reads its stream again, so it is replaced by an empty one and
    the lot is freed at once.
    """
    try:
        await response.aclose()
    finally:
        response.stream = SENT


class ResponseHandler(client_proto.ResponseHandler):
    """aiohttp's protocol for an upstream connection, holding a deque for the responses it has parsed
    only while it holds one.

    aiohttp hands each response's head from the parser to the request through this queue (one item,
    taken at once), and gives every connection an empty deque (~735 B) for it the rest of the time:
    for the whole of a stream, and while the connection waits in the pool.
    """

    def __init__(self, loop):
        super().__init__(loop)
        self._buffer = ()

    def feed_data(self, data, size=0):
        if type(self._buffer) is tuple:
            self._buffer = collections.deque()
        super().feed_data(data, size)

    async def read(self):
        try:
            return await super().read()
        finally:
            if not self._buffer:
                self._buffer = ()


class Body(httpx.AsyncByteStream):
    """A response body: each read returns the bytes the socket has so far (no buffer to fill)."""

    __slots__ = ("response", "request")

    def __init__(self, response, request):
        self.response, self.request = response, request

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            chunk = await self.response.content.readany()
        except aiohttp.SocketTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=self.request) from exc
        except aiohttp.ClientError as exc:  # the connection dropped mid-body, or the body is malformed
            raise httpx.ReadError(str(exc) or exc.__class__.__name__, request=self.request) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self):
        """Release the connection: pooled if the body was read to its end, else closed at once."""
        await self.response.__aexit__(None, None, None)


NO_HEADERS = multidict.CIMultiDictProxy(multidict.CIMultiDict())


def forget_headers(response):
    """Drop the headers a streaming reply keeps and never reads again: httpx's and aiohttp's copies of
    the request's (with the API key) and of the response's. The relay reads only the body, and these
    are kept for the whole stream: ~3.5 KB a stream with the mock's five headers, more with a real
    upstream's rate-limit and cookie headers (bench/memory.py). Called once the answer's status is
    known to be a success (httpx has taken the cookies and seen no redirect by then)."""
    response.request.headers = httpx.Headers()
    response.headers = httpx.Headers()
    raw = getattr(response.extensions.get("body"), "response", None)  # aiohttp's ClientResponse under a Body
    if isinstance(raw, aiohttp.ClientResponse):
        info = raw._request_info
        raw._request_info = aiohttp.RequestInfo(info.url, info.method, NO_HEADERS, info.real_url)
        raw._headers, raw._raw_headers = NO_HEADERS, ()
        for name in ("headers", "raw_headers", "request_info"):  # aiohttp's reify caches what was read
            raw._cache.pop(name, None)


def body(response):
    """Return an async iterator over a streaming response's raw body, as the bytes arrive."""
    return response.extensions.get("body") or response.aiter_raw()


def client():
    """Return this event loop's shared AsyncClient (pooled, keep-alive connections)."""
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is None or shared.is_closed:
        # Timeouts: connecting is bounded here (CHAT_CONNECT_TIMEOUT; `pool` bounds the whole
        # connect, DNS included). Reads are not: every caller of a provider's stream (the relay's
        # Ticker, the API's Exchange) enforces the first-token and stall limits itself, including
        # while the answer's headers are awaited, so an upstream that stalls still ends the reply.
        # A read timeout here was a second clock aiohttp re-armed on every read (a TimerHandle made
        # and one cancelled per token: memory held per stream, CPU per token; docs/PERFORMANCE.md).
        backstop = max(settings.CHAT_FIRST_TOKEN_TIMEOUT, settings.CHAT_STALL_TIMEOUT) + 5
        # limit=0: as many connections as streams (CHAT_MAX_CONCURRENT caps those); idle ones are kept 30 s.
        transport = Transport()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=transport.ssl_context)
        connector._factory = functools.partial(ResponseHandler, loop=loop)  # aiohttp's, a lazy deque
        transport.client = aiohttp.ClientSession(connector=connector)
        shared = httpx.AsyncClient(
            timeout=httpx.Timeout(backstop, connect=settings.CHAT_CONNECT_TIMEOUT, read=None), transport=transport
        )
        _clients[loop] = shared
        _close_with_loop(loop, shared)
    return shared


async def close_client():
    """Close this event loop's shared client and its connections, if it has one."""
    loop = asyncio.get_running_loop()
    shared, closer = _clients.pop(loop, None), _closers.pop(loop, None)
    if closer is not None:
        await closer.aclose()  # closes `shared`
    elif shared is not None:
        await shared.aclose()


async def _closing(shared):
    """Wait, parked, for the loop to end; then close its client (aiohttp's session and connector)."""
    try:
        yield
    finally:
        await shared.aclose()


def _close_with_loop(loop, shared):
    """Close `shared` when its event loop ends, so no connection or aiohttp session outlives it.

    An event loop run by asyncio.run() or an asyncio.Runner (pytest-asyncio's, asgiref's) closes
    the async generators begun on it before it closes: a generator parked at its `yield` is one
    such, and closes the client in its `finally`. daphne's Twisted reactor stops its loop without
    doing that, so under daphne the client is closed by its shutdown trigger (chat.replies).
    """
    closer = _closing(shared)
    _closers[loop] = closer
    try:
        closer.asend(None).send(None)  # to the `yield` (no await before it); the loop now knows it
    except StopIteration:
        pass
    from chat import replies

    replies.watch_for_shutdown()


async def close_at_shutdown():
    """Close the shared client as the server stops (chat.replies.shutdown, after the replies drain)."""
    shared = _clients.get(asyncio.get_running_loop())
    if shared is None or shared.is_closed:
        return
    await close_client()
    log.info("shutting down: the upstream client is closed")


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
                call.forget_prompt()  # no retry now: the payload and the messages are not needed again
                payload = request = None
                try:
                    forget_headers(response)
                    yield response
                finally:
                    await release(response)
                return
            body = await _read_error(response)
            detail = error_message(body, response.status_code)
            message = f"The upstream refused the request (HTTP {response.status_code})."
            code = "rate_limited" if response.status_code == 429 else "upstream_error"
            failure = UpstreamError(message, code=code, status=response.status_code, detail=detail)
            if response.status_code not in RETRY_STATUSES:
                raise failure
            retry_after = failure.retry_after = parse_retry_after(response.headers.get("retry-after"))
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
        await release(response)
