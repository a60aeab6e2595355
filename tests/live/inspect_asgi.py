"""chatsite's application, plus `/__inspect__`: what the serving process holds, for
tests/live/test_lean_daphne.py. Served by `python -m chatsite.serve ... tests.live.inspect_asgi:application`."""

import collections
import gc
import json
import os

from chatsite.asgi import application as chatsite_application

if os.environ.get("INSPECT_GC") == "off":  # no automatic collection: "uncollected" is then all that was not freed at once
    gc.disable()

COUNTED = ("chatsite.lean_daphne.WebSocketProtocol", "chatsite.lean_daphne.WriteThroughServer",
           "daphne.http_protocol.WebRequest", "twisted.web.http.HTTPChannel", "twisted.web.http_headers.Headers",
           "asyncio.queues.Queue", "chatsite.lean_daphne.InputQueue")


def kinds(objects):
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)


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
             "queue": type(s.application_queue).__name__}
            for s in sockets
        ],
    }


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/__inspect__":
        body = json.dumps(held()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    await chatsite_application(scope, receive, send)
