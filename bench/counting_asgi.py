"""chatsite's ASGI application, plus a count of the SQL it runs, served at /__bench__/stats.

Each new database connection gets an execute wrapper that counts statements by verb and table;
that is a few microseconds per query (O(1) queries per request), nothing per token.
"""

import json
import os
import re
import threading

from chatsite.asgi import application as chatsite_application  # noqa: F401 - sets up Django
from django.db.backends.signals import connection_created

WRITE = re.compile(r'^\s*(INSERT INTO|UPDATE|DELETE FROM)\s+"?(\w+)"?', re.IGNORECASE)
_lock = threading.Lock()
_counts = {"queries": 0, "writes": 0, "tables": {}}


def _count(execute, sql, params, many, context):
    match = WRITE.match(sql)
    with _lock:
        _counts["queries"] += 1
        if match:
            _counts["writes"] += 1
            key = f"{match.group(1).split()[0].upper()} {match.group(2)}"
            _counts["tables"][key] = _counts["tables"].get(key, 0) + 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs):
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_install)


def _no_channel_layer():
    """ChatConsumer uses no groups: do not give every socket a channel (a Redis receive loop each)."""
    from chat.consumers import ChatConsumer

    ChatConsumer.channel_layer_alias = "bench-no-layer"  # get_channel_layer() answers None


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


PATCHES = {"no_channel_layer": _no_channel_layer, "httpcore_transport": _httpcore_transport}
# Experiments for recommendations, applied in this process only (run.py --patch NAME).
for _name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
    PATCHES[_name]()


async def application(scope, receive, send):
    """Serve the SQL counts at /__bench__/stats; pass everything else to chatsite."""
    if scope["type"] == "http" and scope["path"] == "/__bench__/stats":
        with _lock:
            body = json.dumps(_counts).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    await chatsite_application(scope, receive, send)
