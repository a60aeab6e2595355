"""The streaming endpoint as an async Django view, for bench/endpoint_cost.py to weigh against gateway/endpoint.py.

Same admission, same provider stream, same chunk bytes, same record; only the path through the
framework differs: Django's ASGI handler, the project's middleware, the URL resolver, an
HttpRequest, and a StreamingHttpResponse over an async generator (Django cancels it when the
client disconnects). Serve it with `daphne bench.django_gateway:application`.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
settings.ROOT_URLCONF = __name__  # this module's urlpatterns, the project's after them

import asyncio  # noqa: E402
import contextlib  # noqa: E402

from django.http import HttpResponse, StreamingHttpResponse  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from chat.providers import UpstreamError, provider_for  # noqa: E402
from gateway import endpoint, wire  # noqa: E402
from gateway.errors import ApiError, from_upstream  # noqa: E402
from gateway.exchange import Exchange  # noqa: E402


@csrf_exempt
async def chat_completions(request):
    """Answer a streamed chat completion through Django."""
    try:
        key, ask, reservation = await endpoint.admit(request.headers.get("authorization", "")[7:], request.body)
    except ApiError as exc:
        return HttpResponse(wire.error_body(exc.status, str(exc), exc.code), status=exc.status,
                            content_type="application/json")
    return StreamingHttpResponse(events(key, ask, reservation), content_type="text/event-stream; charset=utf-8",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def events(key, ask, reservation):
    """Yield the reply's SSE events as the provider's text arrives; write the record at the end."""
    exchange = Exchange(ask.call)
    loop = asyncio.get_running_loop()
    exchange.loop, exchange.started = loop, loop.time()
    chunks = wire.Chunks(ask.call.model, ask.include_usage)
    stream = provider_for(ask.call.model).stream(ask.call)
    try:
        yield chunks.role()
        async with contextlib.aclosing(stream):
            async for text in stream:
                now = exchange.last_read = loop.time()
                if exchange.first_at is None:
                    exchange.first_at = now
                exchange.text.append(text)
                yield chunks.text(text)
        usage, _ = endpoint.usage_of(ask.call, False)
        yield chunks.finish(ask.call.finish_reason, usage)
    except UpstreamError as exc:
        exchange.error = exc
        failure = from_upstream(exc)
        yield chunks.error(failure.status, str(failure), failure.code)
    except asyncio.CancelledError:
        exchange.reason = "disconnect"
        raise
    finally:
        exchange.ended = loop.time()
        await asyncio.shield(endpoint.finish(exchange, key, reservation))


urlpatterns = [path("v1/chat/completions", chat_completions), path("", include("chatsite.urls"))]
