"""What sign-out costs a signed-in socket: chat.signouts' registry against a channel-layer group per person.

    .venv/bin/python bench/signouts.py [--redis redis://127.0.0.1:6379/3] [-n 2000]

Prints the median per-socket cost of (a) signouts.register + unregister (what each signed-in socket
pays now) and (b) new_channel + group_add + group_discard on channels-redis (what a group per person
would cost each socket, before the receive task it would also need).
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")


def per_call_us(samples):
    return statistics.median(samples) * 1e6


async def registry(n):
    from chat import signouts

    consumer, samples = object(), []
    for i in range(n):
        start = time.perf_counter()
        signouts.register(i % 50, consumer)
        signouts.unregister(i % 50, consumer)
        samples.append(time.perf_counter() - start)
    return per_call_us(samples)


async def groups(n, redis_url):
    from channels_redis.core import RedisChannelLayer

    layer, samples = RedisChannelLayer(hosts=[redis_url]), []
    for i in range(n):
        start = time.perf_counter()
        channel = await layer.new_channel()
        await layer.group_add(f"bench.user.{i % 50}", channel)
        await layer.group_discard(f"bench.user.{i % 50}", channel)
        samples.append(time.perf_counter() - start)
    await layer.flush()
    return per_call_us(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/3")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    import django

    django.setup()
    print(f"registry (per signed-in socket now): {asyncio.run(registry(args.n)):.2f} µs median")
    print(f"group per person on Redis (per socket, no receive task counted): "
          f"{asyncio.run(groups(args.n, args.redis)):.1f} µs median")


if __name__ == "__main__":
    main()
