"""The rate limit holds across server processes: its counter lives in the shared Redis cache.

Two cache clients of their own, as two daphne processes have, take turns counting one person's
messages; neither sees more than half of them, so a count kept in either process would never
refuse. Against the real Redis on 127.0.0.1 (CI fails, never skips, when it is down).
"""

import os
import time
import uuid

import pytest
import redis
from django.core.cache.backends.redis import RedisCache

from chat import limits

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"


@pytest.fixture
def two_caches():
    """Return two Redis cache clients with no connection or state in common, as two processes have."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} cannot be reached in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not running here: {exc}")
    prefix = f"chatsite-test-{uuid.uuid4().hex[:8]}"  # runs at once do not count each other
    return [RedisCache(REDIS_URL, {"KEY_PREFIX": prefix}) for _ in range(2)]  # its keys expire in 90 s


@pytest.mark.django_db  # a refusal leaves a row for the reports
def test_it_counts_one_persons_messages_across_two_caches(two_caches, monkeypatch):
    now = (time.time() // 60) * 60 + 1  # early in a minute, with nothing counted in the one before

    def send(cache, who="alice"):
        monkeypatch.setattr(limits, "cache", cache)
        limits.check_rate("person", who, 3, now, "demo/assistant", "Too many messages.")

    for turn in range(3):  # process one, two, one: each has seen at most two messages
        send(two_caches[turn % 2])
    with pytest.raises(limits.Refused) as refused:
        send(two_caches[1])
    assert refused.value.code == "rate_limited"
    send(two_caches[0], "bob")  # someone else is counted apart
