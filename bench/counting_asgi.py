"""chatsite's ASGI application, plus a count of the SQL it runs, served at /__bench__/stats.

Every database connection gets bench/sql_counts.py's execute wrapper, which counts statements by
verb and table: a few microseconds per query (O(1) queries per request), nothing per token.

`/__bench__/snapshot?NAME` (bench/memory.py) counts the objects the garbage collector tracks, by
type, and, when the process traces allocations (PYTHONTRACEMALLOC=frames), dumps a tracemalloc
snapshot to $BENCH_DIR/NAME.tracemalloc.
"""

import collections
import gc
import json
import os
import tracemalloc

from chatsite.asgi import application as chatsite_application  # noqa: F401 - sets up Django

from bench.sql_counts import SqlCounts  # noqa: E402 - after Django is set up

COUNTS = SqlCounts().install()


def _httpcore_transport():
    """The read path before httpx-aiohttp: the shared client on httpx's default transport (httpcore)."""
    import asyncio

    import httpx

    from chat.providers import http

    def client():
        loop = asyncio.get_running_loop()
        shared = http._clients.get(loop)
        if shared is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=16, keepalive_expiry=30)
            shared = http._clients[loop] = httpx.AsyncClient(timeout=httpx.Timeout(65, connect=10), limits=limits)
        return shared

    http.client = client


PATCHES = {"httpcore_transport": _httpcore_transport}
# Experiments for recommendations, applied in this process only (run.py --patch NAME).
for _name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
    PATCHES[_name]()


def kinds(objects):
    return dict(collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects))


def snapshot(name):
    """Return the gc-tracked objects by type, and the cyclic garbage among them (collected, by type);
    dump a tracemalloc snapshot when tracing."""
    objects = kinds(gc.get_objects())
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = kinds(gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    traced = None
    if tracemalloc.is_tracing():  # after the collection: what is left is held
        path = os.path.join(os.environ["BENCH_DIR"], f"{name}.tracemalloc")
        tracemalloc.take_snapshot().dump(path)
        traced = tracemalloc.get_traced_memory()[0]
    return {"objects": objects, "garbage": garbage, "traced": traced}


async def application(scope, receive, send):
    """Serve the SQL counts at /__bench__/stats; pass everything else to chatsite."""
    if scope["type"] == "http" and scope["path"] in ("/__bench__/stats", "/__bench__/snapshot"):
        if scope["path"] == "/__bench__/stats":
            body = json.dumps(COUNTS.snapshot()).encode()
        else:
            body = json.dumps(snapshot(scope["query_string"].decode() or "snapshot")).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    await chatsite_application(scope, receive, send)
