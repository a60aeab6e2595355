"""chatsite's ASGI application, plus a count of the SQL it runs, served at /__bench__/stats.

Every database connection gets bench/sql_counts.py's execute wrapper, which counts statements by
verb and table: a few microseconds per query (O(1) queries per request), nothing per token.

`/__bench__/snapshot?NAME` (bench/memory.py) counts the objects the garbage collector tracks, by
type, and, when the process traces allocations (PYTHONTRACEMALLOC=frames), dumps a tracemalloc
snapshot to $BENCH_DIR/NAME.tracemalloc.
"""

import asyncio
import collections
import gc
import json
import os
import time
import tracemalloc

from chatsite.asgi import application as chatsite_application  # noqa: F401 - sets up Django

from bench.sql_counts import SqlCounts  # noqa: E402 - after Django is set up
from chatsite.routing import returns_awaitable  # noqa: E402

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


def _gc_log():
    """Log each collection of generation 1 or 2, or of any generation taking over 1 ms, to
    $BENCH_DIR/gc-<pid>.log: generation, wall ms, objects collected, end time (bench/gc_pauses.py)."""
    started = []

    def callback(phase, info):
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            took = (time.perf_counter() - started.pop()) * 1000
            if info["generation"] or took > 1:
                with open(_log_path("gc"), "a") as f:
                    f.write(f"{info['generation']} {took:.2f} {info['collected']} {time.time():.3f}\n")

    gc.callbacks.append(callback)


def _log_path(kind):
    return os.path.join(os.environ.get("BENCH_DIR", "/tmp"), f"{kind}-{os.getpid()}.log")


LOOP_LAG = []  # [True] once asked for, then the monitor's task


async def _loop_lag_monitor():
    """Log the event loop's stalls over 5 ms, as a 1 ms sleeper sees them, to $BENCH_DIR/lag-<pid>.log."""
    with open(_log_path("lag"), "a", buffering=1) as f:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            late = (time.perf_counter() - before) * 1000 - 1
            if late > 5:
                f.write(f"{late:.2f} {time.time():.3f}\n")


def _switch_1ms():
    """Hand the GIL over after 1 ms instead of 5 (a thread waiting for it waits less)."""
    import sys

    sys.setswitchinterval(0.001)


def _phases():
    """Log each reply's way to its first delta to $BENCH_DIR/phases-<pid>.log: the wait for and time
    in turns.start (the database thread), then from its return to the first delta's send (the
    upstream's request and first token, its 50 ms included), in ms, and the time of the send."""
    from chat import relay, turns

    original_start, original_run, original_send_now = turns.start, relay.Generation.run, relay.Generation._send_now
    log = open(_log_path("phases"), "a", buffering=1)

    async def start(owner, request):
        marks = request.get("_bench", {})
        marks["start_called"] = time.perf_counter()
        try:
            return await original_start(owner, request)
        finally:
            marks["started"] = time.perf_counter()

    async def run(self):
        self.request["_bench"] = {}
        return await original_run(self)

    async def send_now(self, text, now):
        marks = self.request.get("_bench")
        if marks and "started" in marks and not marks.get("sent"):
            marks["sent"] = time.perf_counter()
            log.write(f"{(marks['started'] - marks['start_called']) * 1000:.2f} "
                      f"{(marks['sent'] - marks['started']) * 1000:.2f} {time.time():.3f}\n")
        return await original_send_now(self, text, now)

    turns.start, relay.Generation.run, relay.Generation._send_now = start, run, send_now


def _buffered_writes():
    """twisted's own buffered writes (each sent on the loop's next iteration), not chatsite.lean_daphne's
    WriteThrough transports; takes effect because the application loads before daphne listens."""
    from chatsite import lean_daphne

    lean_daphne.WRITE_THROUGH = False


SAVE_ALL = []  # [True] under the gc_save_all patch


def _gc_save_all():
    """Keep everything the collector finds unreachable, so that /__bench__/snapshot reports all the
    cyclic garbage made since the previous snapshot, not only what no automatic collection took yet
    (bench/garbage.py)."""
    SAVE_ALL.append(True)
    gc.set_debug(gc.DEBUG_SAVEALL)


def _request_cycles():
    """Answer HTTP requests as before chatsite.handler.forget: each request's objects left as cyclic garbage."""
    from chatsite import handler

    handler.forget = lambda request, tasks: None


def _socket_cycle():
    """Close websockets as before chatsite.lean_daphne's connectionLost: autobahn's `is_closed` resolved
    with the protocol, each closed socket's objects left as cyclic garbage."""
    from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol

    from chatsite import lean_daphne

    lean_daphne.WebSocketProtocol.connectionLost = DaphneWebSocketProtocol.connectionLost


def _response_cycle():
    """Close upstream responses as before chat.providers.http.release broke httpx's response/stream
    cycle: each reply's response, body and aiohttp objects left for the collector."""
    from chat.providers import http

    async def release(response):
        await response.aclose()

    http.release = release


PATCHES = {"gc_save_all": _gc_save_all, "socket_cycle": _socket_cycle, "request_cycles": _request_cycles, "response_cycle": _response_cycle, "httpcore_transport": _httpcore_transport, "switch_1ms": _switch_1ms, "buffered_writes": _buffered_writes, "gc_log": _gc_log, "phases": _phases, "loop_lag": lambda: LOOP_LAG.append(True)}
# Experiments for recommendations, applied in this process only (run.py --patch NAME); gc_log and loop_lag
# only measure (bench/variants.py --measure-pauses).
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
    gc.collect()  # what was saved is still unreachable, cycles and all: free it now, or the next snapshot counts it again
    if SAVE_ALL:
        gc.set_debug(gc.DEBUG_SAVEALL)
    traced = None
    if tracemalloc.is_tracing():  # after the collection: what is left is held
        path = os.path.join(os.environ["BENCH_DIR"], f"{name}.tracemalloc")
        tracemalloc.take_snapshot().dump(path)
        traced = tracemalloc.get_traced_memory()[0]
    return {"objects": objects, "garbage": garbage, "traced": traced}


@returns_awaitable
def application(scope, receive, send):
    """Serve the SQL counts at /__bench__/stats; pass everything else to chatsite.

    A plain callable returning chatsite's awaitable, so an open socket's task holds what it holds
    when chatsite is served alone (an `async def` wrapper would keep a frame and the server's
    scope for the socket's life: bench/memory.py would count them)."""
    if LOOP_LAG == [True]:  # the first request starts the monitor on the serving loop
        LOOP_LAG.append(asyncio.get_running_loop().create_task(_loop_lag_monitor()))
    if scope["type"] == "http" and scope["path"] in ("/__bench__/stats", "/__bench__/snapshot"):
        return _serve_bench(scope, send)
    return chatsite_application(scope, receive, send)


async def _serve_bench(scope, send):
    if scope["path"] == "/__bench__/stats":
        body = json.dumps(COUNTS.snapshot()).encode()
    else:
        body = json.dumps(snapshot(scope["query_string"].decode() or "snapshot")).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
