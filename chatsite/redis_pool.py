"""One Redis connection pool per process for Django's cache, and so for sessions and rate limits.

Django's RedisCache makes its pool when a cache object is first used, and the cache object lives in
an asgiref Local: under ASGI every request and every websocket has a context of its own, so each
made a pool and a connection of its own, which stayed open until the garbage collector came by
(issue 18: ~2 connections per person, ~150 idle per process). `SharedConnectionPool` hands every
cache object the same pool: connections are reused, and at most REDIS_POOL_SIZE are open; a
request that finds them all busy waits for one (a cache call takes well under a millisecond).

The channel layer (channels-redis) keeps its own asyncio pool per event loop, made once and
reused: redis-py's asyncio and blocking pools cannot be shared, and a layer `receive` holds its
connection while it waits, so that pool is not capped here.
"""

import threading

import redis

_pools = {}
_lock = threading.Lock()


class SharedConnectionPool(redis.BlockingConnectionPool):
    """A blocking pool made once per process for each URL and options."""

    @classmethod
    def from_url(cls, url, **options):
        """Return this process's pool for `url` and `options`, making it the first time."""
        key = (url, tuple(sorted((name, repr(value)) for name, value in options.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = super().from_url(url, **options)
            return pool

