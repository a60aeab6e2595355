"""The OpenAI-compatible endpoint, a small ASGI application: POST /v1/chat/completions, GET /v1/models.

It runs beside Django in the same ASGI process (chatsite/asgi.py sends /v1/ here) but outside
Django's request cycle: no middleware, no URL resolver, no sessions, and two thread hops per request
(admit, then record), never one per token. bench/endpoint_cost.py measures it against an async
Django view doing the same work.
"""

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from chat.turns import usage_of
from gateway import accounting, spending, wire
from gateway.body import parse
from gateway.errors import ApiError, from_upstream
from gateway.exchange import ClientGone, Exchange
from gateway.models import ApiKey

log = logging.getLogger(__name__)

STARTED = int(time.time())
ROUTES = {"/v1/chat/completions": "POST", "/v1/models": "GET"}


def mount(django_app):
    """Return an ASGI app that serves /v1/ here and everything else with `django_app`."""

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            return await application(scope, receive, send)
        return await django_app(scope, receive, send)

    return app


async def application(scope, receive, send):
    """Answer one /v1/ request; every refusal in OpenAI's error format."""
    path, method = scope["path"].rstrip("/"), scope["method"]
    try:
        if path not in ROUTES:
            raise ApiError(404, f"Unknown path {scope['path']}: use /v1/chat/completions or /v1/models.",
                           "unknown_url")
        if method != ROUTES[path]:
            raise ApiError(405, f"Use {ROUTES[path]} for {path}.", "method_not_allowed")
        if path == "/v1/models":
            await read_body(receive)
            key = await authenticate(bearer(scope))
            allowed = key.models_allowed()
            models = [m for m in settings.CHAT_MODELS if not allowed or m in allowed]
            return await respond(send, 200, wire.model_list(models, STARTED))
        body = await read_body(receive)
        if body is None:
            return  # the caller left before sending its request
        key, ask, reservation = await admit(bearer(scope), body)
    except ApiError as exc:
        return await respond_error(send, exc)
    await complete(receive, send, key, ask, reservation)


async def complete(receive, send, key, ask, reservation):
    """Relay one admitted completion, streamed or whole; then settle its budget and write its record."""
    exchange = Exchange(ask.call)
    watcher = asyncio.get_running_loop().create_task(watch_disconnect(receive, exchange))
    try:
        if ask.call.stream:
            await stream_reply(send, exchange, ask)
        else:
            await whole_reply(send, exchange, ask)
    finally:
        watcher.cancel()
        # The books must survive a second cancellation (the server shutting down mid-write).
        await asyncio.shield(finish(exchange, key, reservation))


async def stream_reply(send, exchange, ask):
    """Send the reply as `chat.completion.chunk` events, each delta as it arrives.

    The response starts with the first delta, so a failure before it (after the provider's retries)
    is answered with a proper status rather than a 200 stream that errs.
    """
    chunks = wire.Chunks(ask.call.model, ask.include_usage)
    started = False

    async def deliver(text):
        nonlocal started
        try:
            if started:
                await send({"type": "http.response.body", "body": chunks.text(text), "more_body": True})
                return
            started = True
            await send({"type": "http.response.start", "status": 200, "headers": wire.SSE_HEADERS})
            await send({"type": "http.response.body", "body": chunks.role() + chunks.text(text), "more_body": True})
        except Exception as exc:  # daphne raises its own types for a closed connection
            raise ClientGone(str(exc)) from exc

    error = await exchange.run(deliver)
    if exchange.reason == "disconnect":
        return
    if error is not None and not started:
        return await respond_error(send, from_upstream(error))
    if error is not None:
        failure = from_upstream(error)
        return await send_body(send, chunks.error(failure.status, str(failure), failure.code))
    usage, _ = usage_of(exchange.call, False)
    end = chunks.finish(exchange.call.finish_reason, usage)
    if not started:
        await send({"type": "http.response.start", "status": 200, "headers": wire.SSE_HEADERS})
        end = chunks.role() + end
    await send_body(send, end)


async def whole_reply(send, exchange, ask):
    """Send the reply as one `chat.completion`."""
    error = await exchange.run(ignore)
    if exchange.reason == "disconnect":
        return
    if error is not None:
        return await respond_error(send, from_upstream(error))
    usage, _ = usage_of(exchange.call, False)
    body = wire.completion(ask.call.model, "".join(exchange.text), exchange.call.finish_reason, usage)
    await respond(send, 200, body)


async def ignore(text):
    """Take a delta and do nothing: a whole reply is sent from the exchange's text."""


async def watch_disconnect(receive, exchange):
    """End the exchange (and so the upstream request) as soon as the caller disconnects."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.cancel("disconnect")
            return


@database_sync_to_async
def admit(raw_key, body):
    """Return (key, ask, reservation) for a request that may go upstream, or raise ApiError (401…429)."""
    key = ApiKey.objects.authenticate(raw_key)
    if key is None:
        raise invalid_key(raw_key)
    ask = parse(body)
    if not key.allows(ask.call.model):
        raise ApiError(403, f"This key may not use the model {ask.call.model!r}.", "model_not_allowed", "model")
    spending.check_rate(key, ask.call.model)
    reservation = spending.reserve(key, ask.call.model, ask.worst_case_tokens())
    return key, ask, reservation


@database_sync_to_async
def authenticate(raw_key):
    """Return the usable key named by `raw_key`, or raise a 401."""
    key = ApiKey.objects.authenticate(raw_key)
    if key is None:
        raise invalid_key(raw_key)
    return key


@database_sync_to_async
def finish(exchange, key, reservation):
    """Write the exchange's record and settle its reservation with the real cost, in one transaction.

    Spent and recorded together, or neither: if the write fails, the hold lapses after
    CHAT_BUDGET_HOLD_SECONDS.
    """
    with transaction.atomic():
        record = accounting.record(exchange, "api", key)
        spending.settle(reservation, record.cost_usd)


def invalid_key(raw_key):
    """Return the 401 for a missing, unknown, revoked or expired key."""
    if not raw_key:
        return ApiError(401, "No API key: send 'Authorization: Bearer <key>'.", "missing_api_key")
    return ApiError(401, "Incorrect API key provided, or the key is revoked or expired.", "invalid_api_key")


def bearer(scope):
    """Return the key in the Authorization header, or ""."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


async def read_body(receive):
    """Return the request body (at most API_MAX_BODY_BYTES, else 413), or None if the caller left."""
    body, limit = bytearray(), settings.API_MAX_BODY_BYTES
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise ApiError(413, f"The request body is over {limit} bytes.", "request_too_large")
        if not message.get("more_body"):
            return bytes(body)


async def respond(send, status, body, headers=()):
    """Send a whole JSON response."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*wire.JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def respond_error(send, error):
    """Send an ApiError in OpenAI's format, with Retry-After when it has one."""
    headers = [(b"retry-after", str(error.retry_after).encode())] if error.retry_after is not None else []
    await respond(send, error.status, wire.error_body(error.status, str(error), error.code, error.param), headers)


async def send_body(send, body):
    """Send the last part of a streamed body; a caller that already left is not an error."""
    try:
        await send({"type": "http.response.body", "body": body, "more_body": False})
    except Exception as exc:  # daphne raises its own types for a closed connection
        log.debug("caller left before the end of its stream: %s", exc)
