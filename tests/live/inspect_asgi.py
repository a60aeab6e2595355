"""chatsite's application, plus `/__inspect__`: what the serving process holds, for
tests/live/test_lean_daphne.py. Served by `python -m chatsite.serve ... tests.live.inspect_asgi:application`."""

import collections
import gc
import json
import os

from chatsite.asgi import application as chatsite_application
from chatsite.routing import returns_awaitable

if os.environ.get("INSPECT_GC") == "off":  # no automatic collection: "uncollected" is then all that was not freed at once
    gc.disable()

COUNTED = ("chatsite.lean_daphne.WebSocketProtocol", "chatsite.lean_daphne.WriteThroughServer",
           "daphne.http_protocol.WebRequest", "twisted.web.http.HTTPChannel", "twisted.web.http_headers.Headers",
           "asyncio.queues.Queue", "chatsite.lean_daphne.InputQueue")


def kinds(objects):
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)


def awaiting(task):
    """The coroutines an application's task waits in (outermost first), the websocket scopes their
    frames hold, and how many headers the consumer's scope still has."""
    names, scopes, consumer = [], {}, None
    awaited = task.get_coro() if task is not None else None
    while hasattr(awaited, "cr_frame"):
        names.append(awaited.cr_code.co_qualname)
        for value in awaited.cr_frame.f_locals.values():
            if isinstance(value, dict) and value.get("type") == "websocket":
                scopes[id(value)] = value
            elif type(value).__name__ == "ChatConsumer":
                consumer = value
        awaited = awaited.cr_await
    return {"awaiting": names, "scopes": len(scopes),
            "scope_headers": len(consumer.scope["headers"]) if consumer is not None else None}


def held():
    """Objects of the COUNTED types before a collection (held, or cyclic garbage not yet collected) and
    after one, and the state of each open websocket protocol."""
    from autobahn.websocket.protocol import WebSocketProtocol

    uncollected = kinds(gc.get_objects())
    gc.collect()
    objects = gc.get_objects()
    names = kinds(objects)
    sockets = [o for o in objects if isinstance(o, WebSocketProtocol) and o.state == WebSocketProtocol.STATE_OPEN]
    return {
        "counts": {name: names.get(name, 0) for name in COUNTED},
        "uncollected": {name: uncollected.get(name, 0) for name in COUNTED},
        "sockets": [
            {"attributes": sorted(vars(s)), "request": type(s.request).__name__, "path": s.request.path,
             "producer": type(getattr(s.transport, "producer", None)).__name__,
             "transport": type(s.transport).__name__,
             "queue": type(s.application_queue).__name__,
             **awaiting(s.server.connections.get(s, {}).get("application_instance"))}
            for s in sockets
        ],
    }


@returns_awaitable
def application(scope, receive, send):
    """chatsite's application as it is served (this wrapper keeps no frame in a socket's task), and
    `/__inspect__`."""
    if scope["type"] == "http" and scope["path"] == "/__inspect__":
        return serve_inspect(send)
    return chatsite_application(scope, receive, send)


async def serve_inspect(send):
    body = json.dumps(held()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
