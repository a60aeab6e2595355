"""Cyclic garbage a served daphne leaves per reply and per conversation, by type: what its garbage
collector has to find (and pause the event loop for) that reference counting did not free.

    .venv/bin/python bench/garbage.py [--variants as-served,response-cycle,request-cycles,socket-cycle] [--repeat 1]

Each variant gets a fresh daphne (`python -m chatsite.serve`, SQLite) that keeps everything its
collector finds unreachable (`gc.DEBUG_SAVEALL`, bench/counting_asgi.py's `gc_save_all`), so that a
snapshot (`/__bench__/snapshot`: a full collection) counts all the cyclic garbage made since the one
before, including what automatic collections took meanwhile. After a warm-up, two phases:

- replies: 20 open sockets send 5 messages each (20-token replies, a token every 2 ms);
- conversations: 50 conversations opened as the page does (`GET /`, `POST /session/`, the
  websocket), one reply each, then closed; their figure is per conversation, the reply included.

Variants: `as-served`; `response-cycle`, each reply's upstream response left in httpx's
response/stream cycle (before `chat.providers.http.release`); `request-cycles`, each HTTP request's
objects left in Django's cycles (before `chatsite.handler.forget`); `socket-cycle`, each closed
websocket's objects left in autobahn's `is_closed` cycle (before `chatsite.lean_daphne`'s
`connectionLost`).
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client  # noqa: E402
from bench.rounds import model_name  # noqa: E402
from bench.servers import Servers, http  # noqa: E402

VARIANTS = {"as-served": [], "response-cycle": ["response_cycle"], "request-cycles": ["request_cycles"],
            "socket-cycle": ["socket_cycle"]}
SOCKETS, REPLIES, CONVERSATIONS = 20, 5, 50
MODEL = model_name(2, 20)


async def replies(conn, tag, count):
    for j in range(count):
        request = conn.send(f"{tag}-{j}", "mock/" + MODEL)
        await asyncio.wait_for(asyncio.shield(request.done), 30)
        if request.status != "completed":
            raise RuntimeError(f"reply {tag}-{j} ended {request.status}: {request.error}")


async def garbage(port, name):
    return (await http(port, f"/__bench__/snapshot?{name}"))["garbage"]


async def one_variant(servers, name, repeat):
    servers.patches = [*VARIANTS[name], "gc_save_all"]
    servers.start_daphne(1)
    port = servers.ports[0]
    try:
        conns = [await client.open_socket("127.0.0.1", port) for _ in range(SOCKETS)]
        await asyncio.gather(*(replies(c, f"warm-{name}-{repeat}-{i}", 2) for i, c in enumerate(conns)))
        await asyncio.sleep(3)  # daphne forgets finished HTTP requests (the page GETs) each second or so
        await garbage(port, "base")
        await asyncio.gather(*(replies(c, f"run-{name}-{repeat}-{i}", REPLIES) for i, c in enumerate(conns)))
        await asyncio.sleep(1.5)
        per_reply = await garbage(port, "replies")
        news = [await client.open_socket("127.0.0.1", port) for _ in range(CONVERSATIONS)]
        await asyncio.gather(*(replies(c, f"new-{name}-{repeat}-{i}", 1) for i, c in enumerate(news)))
        await asyncio.gather(*(c.close() for c in news))
        await asyncio.sleep(3)  # daphne forgets finished HTTP requests and closed sockets each second or so
        per_conversation = await garbage(port, "conversations")
        await asyncio.gather(*(c.close() for c in conns))
    finally:
        servers.stop_daphne()
    return ({k: v / (SOCKETS * REPLIES) for k, v in per_reply.items()},
            {k: v / CONVERSATIONS for k, v in per_conversation.items()})


def top(counts, n):
    return ", ".join(f"{name.rsplit('.', 1)[-1]} {count:.1f}"
                     for name, count in sorted(counts.items(), key=lambda kv: -kv[1])[:n])


async def main(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-garbage-"))
    servers = Servers(workdir, f"sqlite:///{workdir}/db.sqlite3")
    servers.models = [f"mock/{MODEL}"]
    results = {name: [] for name in args.variants.split(",")}
    try:
        servers.start_mock()
        servers.migrate()
        for repeat in range(args.repeat):
            for name in results:
                results[name].append(await one_variant(servers, name, repeat))
    finally:
        servers.stop()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\n### Cyclic garbage, {args.repeat} repeat(s), one daphne per variant on SQLite; load average {load}\n")
    print("| variant | objects per reply (each) | objects per conversation (each) | most common, per reply "
          "| most common, per conversation |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        replies_each = [sum(r.values()) for r, _ in runs]
        conversations_each = [sum(c.values()) for _, c in runs]
        print(f"| {name} | {statistics.median(replies_each):.1f} ({', '.join(f'{x:.1f}' for x in replies_each)}) "
              f"| {statistics.median(conversations_each):.1f} ({', '.join(f'{x:.1f}' for x in conversations_each)}) "
              f"| {top(runs[-1][0], args.top)} | {top(runs[-1][1], args.top)} |")
    print(f"\nlogs in {workdir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--top", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
