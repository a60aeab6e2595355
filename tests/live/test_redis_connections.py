"""Redis connections stay flat under load: each daphne reuses one pool for every page load and socket.

Two daphnes on PostgreSQL and Redis (as in production) with REDIS_POOL_SIZE=2 serve 200 page loads,
each followed by a websocket that sends a message (its rate-limit counter is in Redis) and closes.
The connections are told apart by the local ports of each daphne's sockets to Redis, and the
cache's by the name its pool gives them (CLIENT SETNAME), so other users of the server do not count.
"""

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import procfs
from tests.live.client import Chat, new_session
from tests.live.conftest import FAST, MODELS
from tests.live.servers import live_redis, production

pytestmark = pytest.mark.services

POOL = 2
LOADS = 200
AT_ONCE = 8


@pytest.fixture(scope="module")
def pooled(upstream, tmp_path_factory):
    """Two daphnes sharing PostgreSQL and Redis, each with a Redis pool of POOL connections."""
    with production(upstream, tmp_path_factory.mktemp("live-pool"), "_pool", models=MODELS, REDIS_POOL_SIZE=POOL,
                    CHAT_RATE_LIMIT=100_000,
                    CHAT_IP_RATE_LIMIT=0, DB_POOL_SIZE=4) as deployment:
        yield deployment.servers, deployment.store, live_redis()


def redis_port(redis_url):
    return urllib.parse.urlsplit(redis_url).port or 6379


def cache_connections(redis_url, local_ports):
    """Return the local ports of the cache pool's connections (named chatsite-cache) among `local_ports`."""
    import redis

    parts = urllib.parse.urlsplit(redis_url)
    admin = redis.Redis(host=parts.hostname, port=parts.port or 6379)
    try:
        return {int(c["addr"].rsplit(":", 1)[1]) for c in admin.client_list()
                if c.get("name") == "chatsite-cache" and int(c["addr"].rsplit(":", 1)[1]) in local_ports}
    finally:
        admin.close()


def chat_once(server):
    """Load the page for a new session, send one message over a websocket, wait for `done`, close."""
    chat = Chat(server, new_session(server))
    try:
        chat.send(type="send", content="hello", model=FAST)
        assert chat.until("done")[-1]["status"] == "completed"
    finally:
        chat.close()


def test_it_reuses_one_redis_pool_per_process_across_page_loads_and_sockets(pooled):
    servers, store, redis_url = pooled
    port = redis_port(redis_url)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        list(pool.map(chat_once, [servers[n % 2] for n in range(2 * AT_ONCE)]))  # warm up
    before = [procfs.local_ports(s.process.pid, port) for s in servers]

    seen = [set(ports) for ports in before]  # every Redis connection each daphne had while loaded
    most = [len(ports) for ports in before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            for n, server in enumerate(servers):
                ports = procfs.local_ports(server.process.pid, port)
                seen[n] |= ports
                most[n] = max(most[n], len(ports))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(AT_ONCE) as pool:
            list(pool.map(chat_once, [servers[n % 2] for n in range(LOADS)]))
    finally:
        done.set()
        sampler.join()
    after = [procfs.local_ports(s.process.pid, port) for s in servers]

    assert store.query("SELECT count(*) FROM billing_usagerecord")[0][0] == LOADS + 2 * AT_ONCE
    for n in range(2):
        cache = cache_connections(redis_url, seen[n])
        # The cache (sessions, rate limits) used at most POOL connections over all 200 loads...
        assert 0 < len(cache) <= POOL, (n, cache)
        # ...and, whatever else talks to Redis, the count stayed flat: no connection per request.
        assert len(after[n]) <= len(before[n]) + POOL, (n, before[n], after[n])
        assert most[n] <= len(before[n]) + POOL, (n, most[n], before[n])
        assert len(seen[n] - before[n]) <= POOL, (n, len(seen[n] - before[n]))
