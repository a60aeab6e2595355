"""The scale-out parts against the real Redis on 127.0.0.1 (CI fails, never skips, when it is down)."""

import os
import uuid

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.core.cache.backends.redis import RedisCache

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"


@pytest.fixture(scope="module", autouse=True)
def real_redis():
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} cannot be reached in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not running here: {exc}")


async def test_it_passes_messages_and_groups_through_the_redis_channel_layer():
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=f"test-{uuid.uuid4().hex[:8]}")
    one = await layer.new_channel()
    two = await layer.new_channel()
    await layer.send(one, {"type": "chat.delta", "text": "hi"})
    assert await layer.receive(one) == {"type": "chat.delta", "text": "hi"}
    await layer.group_add("room", one)
    await layer.group_add("room", two)
    await layer.group_send("room", {"type": "chat.done"})
    assert (await layer.receive(one))["type"] == "chat.done"
    assert (await layer.receive(two))["type"] == "chat.done"
    await layer.flush()


def test_it_shares_the_django_cache_through_redis():
    writer = RedisCache(REDIS_URL, {"KEY_PREFIX": "chatsite-test"})
    reader = RedisCache(REDIS_URL, {"KEY_PREFIX": "chatsite-test"})  # as another process would
    key = f"k-{uuid.uuid4().hex}"
    writer.set(key, {"n": 1}, 30)
    assert reader.get(key) == {"n": 1}
    assert reader.add(key + "-n", 0, 30)
    assert writer.incr(key + "-n") == 1
    reader.delete(key)
    assert writer.get(key) is None
