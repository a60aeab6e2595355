"""Memory per open stream on a fresh, warmed daphne, and what holds it.

    .venv/bin/python bench/memory.py                  # RSS per open socket and per stream, 1,000 streams
    .venv/bin/python bench/memory.py --objects        # also the gc-tracked objects each stream adds, by type
    .venv/bin/python bench/memory.py --trace 25       # also tracemalloc (25 frames): by line, by traceback
    .venv/bin/python bench/memory.py --repeat 3       # three fresh processes, medians
    .venv/bin/python bench/memory.py --repeat 3 --baseline ../base   # and another checkout, interleaved
    .venv/bin/python bench/memory.py --repeat 2 --baseline . --env MALLOC_ARENA_MAX=2   # an environment, A/B
    .venv/bin/python bench/memory.py --repeat 2 --baseline . --server uvicorn-wsproto    # another server, A/B

One round: a fresh daphne (as served: `python -m chatsite.serve`, SQLite, the in-memory layer and
cache) warmed with 10 short conversations; then N conversations opened (page GET, `POST /session/`,
websocket), then one message on each, the sends spread over 10 s, each reply 30 tokens a second
apart, so all N stream at once from ~10 s to ~30 s. RSS is read from /proc (the process and its children):
before the sockets
(`base`), with them open (`open`), and its peak while they stream. With --trace the process runs
under PYTHONTRACEMALLOC and dumps a snapshot at each of the three points (`/__bench__/snapshot`,
bench/counting_asgi.py), and the differences are printed per stream; tracing costs time and memory
of its own, so its RSS figures are not the ones to quote (run without --trace for those).

--server serves this tree's rounds with another ASGI server instead (the same application,
bench/counting_asgi.py wrapping chatsite.asgi:application), from another virtualenv (--python,
default .venv-alt: requirements.txt plus the servers, not installed by `make install`):
uvicorn on uvloop and httptools with its wsproto or websockets implementation, or granian (its ASGI
interface without lifespan, one worker, uvloop). --env sets variables for this tree's rounds only.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client  # noqa: E402
from bench.rounds import OPEN_AT_ONCE, model_name  # noqa: E402
from bench.run import warm  # noqa: E402
from bench.servers import PYTHON, ROOT, Servers, http  # noqa: E402
from bench.servers import tree_rss_kb as rss_kb  # noqa: E402

SPREAD_S = 10.0
SERVERS = ("daphne", "uvicorn-wsproto", "uvicorn-websockets", "granian")


def serve_with(servers, name, python):
    """Set how `servers` starts its process: chatsite's daphne (the default) or another server."""
    if name == "daphne":
        servers.command = [PYTHON, "-m", "chatsite.serve"]
        servers.arguments = lambda port: ["-b", "127.0.0.1", "-p", str(port), servers.asgi]
    elif name.startswith("uvicorn-"):
        servers.command = [python, "-m", "uvicorn"]
        servers.arguments = lambda port: [
            "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--ws", name.removeprefix("uvicorn-"), "--lifespan", "off", "--log-level", "warning", servers.asgi]
    elif name == "granian":
        servers.command = [str(Path(python).parent / "granian")]
        servers.arguments = lambda port: [
            "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--loop", "uvloop", "--log-level", "warning", servers.asgi]
    else:
        raise SystemExit(f"--server: one of {', '.join(SERVERS)}")


def say(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


async def open_sockets(n, port):
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one():
        async with gate:
            return await client.open_socket("127.0.0.1", port)

    return await asyncio.gather(*(one() for _ in range(n)))


async def one_round(args, servers, index):
    """Run one round on a fresh process; return its figures."""
    port = servers.start_daphne(1, timeout=300 if args.trace else 30)[0]
    pid = servers.pids[0]
    await warm(servers)
    await asyncio.sleep(1)
    snap = {}

    async def snapshot(name):
        if args.trace or args.objects:
            snap[name] = await http(port, f"/__bench__/snapshot?r{index}-{name}")

    await snapshot("base")
    await asyncio.sleep(0.5)
    base = rss_kb(pid)
    conns = await open_sockets(args.streams, port)
    await asyncio.sleep(3)  # daphne reaps the page GETs' and session POSTs' application instances each second
    opened = rss_kb(pid)
    await snapshot("open")
    opened_after = rss_kb(pid)
    model = "mock/" + model_name(1000, args.hold_tokens)
    peak = [opened_after]
    reqs = []

    async def send(i, conn):
        await asyncio.sleep(SPREAD_S * i / len(conns))
        reqs.append(conn.send(f"memory-{index}-{i}", model))

    senders = asyncio.gather(*(send(i, c) for i, c in enumerate(conns)))
    deadline = time.monotonic() + SPREAD_S + args.hold_tokens
    streaming_at = None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        peak[0] = max(peak[0], rss_kb(pid))
        began = len(reqs) == len(conns) and all(r.first_at for r in reqs)
        if streaming_at is None and (began or time.monotonic() > deadline - args.hold_tokens / 2):
            streaming_at = rss_kb(pid)
            await snapshot("streaming")
        if reqs and len(reqs) == len(conns) and all(r.done.done() for r in reqs):
            break
    await senders
    await asyncio.wait([r.done for r in reqs], timeout=args.hold_tokens + 60)
    failed = sum(1 for r in reqs if r.status != "completed")
    await asyncio.gather(*(c.close() for c in conns))
    n = args.streams
    out = {"base_kb": base, "open_kb": opened, "streaming_kb": streaming_at, "peak_kb": peak[0],
           "socket_kb": (opened - base) / n, "stream_kb": (peak[0] - opened_after) / n,
           "total_kb": (peak[0] - base - (opened_after - opened)) / n, "failed": failed, "snap": snap}
    say(f"round {index}: RSS base {base} KB, {n} open {opened} KB, peak streaming {peak[0]} KB: "
        f"{out['socket_kb']:.1f} KB per open socket + {out['stream_kb']:.1f} KB per stream = "
        f"{out['total_kb']:.1f} KB per open conversation; {failed} replies not completed")
    return out


def by_type(after, before, n, top, key="objects"):
    rows = []
    for kind, count in after[key].items():
        diff = count - before[key].get(kind, 0)
        if diff >= n // 2:
            rows.append((diff, kind))
    rows.sort(reverse=True)
    return [f"| {kind} | {diff / n:.2f} |" for diff, kind in rows[:top]]


def by_line(after_path, before_path, n, top, key, frames=1):
    after = tracemalloc.Snapshot.load(after_path)
    before = tracemalloc.Snapshot.load(before_path)
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    after, before = after.filter_traces(ignore), before.filter_traces(ignore)
    stats = after.compare_to(before, key, cumulative=False)
    total = sum(s.size_diff for s in stats)
    lines = [f"total traced growth: {total / n:.0f} B per stream"]
    for stat in stats[:top]:
        if key == "traceback":
            lines.append(f"- {stat.size_diff / n:.0f} B, {stat.count_diff / n:.2f} blocks per stream:")
            for frame in stat.traceback.format(limit=frames, most_recent_first=True):
                lines.append("    " + frame.strip())
        else:
            frame = stat.traceback[0]
            where = f"{short(frame.filename)}:{frame.lineno}"
            lines.append(f"| {where} | {stat.size_diff / n:.0f} | {stat.count_diff / n:.2f} | {code(frame)} |")
    return lines


def short(filename):
    for marker in ("site-packages/", "python3.11/", "/perf/", "/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def code(frame):
    import linecache

    return linecache.getline(frame.filename, frame.lineno).strip()[:80].replace("|", "\\|")


async def main(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    servers = Servers(workdir, f"sqlite:///{workdir}/db.sqlite3")
    servers.models = [f"mock/{model_name(g, t)}" for g in (10, 1000) for t in (5, args.hold_tokens)]
    say(f"logs, database and snapshots in {workdir}")
    rounds, base_rounds = [], []
    try:
        servers.start_mock()
        servers.migrate()
        if args.trace:
            servers.extra_env["PYTHONTRACEMALLOC"] = str(args.trace)
        env = dict(pair.split("=", 1) for pair in args.env)
        for index in range(args.repeat):
            if args.baseline:
                servers.root = Path(args.baseline).resolve()
                serve_with(servers, "daphne", args.python)
                say(f"baseline: {servers.root}")
                base_rounds.append(await one_round(args, servers, index))
            servers.root = ROOT
            serve_with(servers, args.server, args.python)
            servers.extra_env.update(env)
            say(f"this tree: {ROOT}, {args.server} {' '.join(args.env)}")
            rounds.append(await one_round(args, servers, index))
            for name in env:
                servers.extra_env.pop(name)
    finally:
        servers.stop()
    n = args.streams
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\n{n} streams, {args.hold_tokens} tokens 1 s apart, {args.repeat} fresh process(es), "
          f"{'tracing ' + str(args.trace) + ' frames' if args.trace else 'no tracing'}; load average {' '.join(load)}")
    this = f"this tree ({args.server}{', ' + ' '.join(args.env) if args.env else ''})"
    for name, group in (("baseline " + str(args.baseline) + " (daphne)", base_rounds), (this, rounds)):
        if not group:
            continue
        print(f"{name}:")
        for key, label in (("socket_kb", "KB per open socket (page GET, session, handshake; idle)"),
                           ("stream_kb", "KB per stream on an open socket (peak)"),
                           ("total_kb", "KB per open conversation (the issue's figure)")):
            values = [r[key] for r in group]
            print(f"- {label}: median {statistics.median(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
    last = rounds[-1]
    if not (args.trace or args.objects):
        return
    if last["snap"].get("streaming") is None:
        print("(no snapshot while streaming: some reply never began)")
        return
    print("\ngc-tracked objects per stream, open - base (type | per socket):\n")
    print("\n".join(by_type(last["snap"]["open"], last["snap"]["base"], n, args.top)))
    print("\n... of which cyclic garbage (collected then), open - base (type | per socket):\n")
    print("\n".join(by_type(last["snap"]["open"], last["snap"]["base"], n, args.top, "garbage")))
    print("\ngc-tracked objects per stream, streaming - open (type | per stream):\n")
    print("\n".join(by_type(last["snap"]["streaming"], last["snap"]["open"], n, args.top)))
    if args.trace:
        index = len(rounds) - 1
        path = {k: str(workdir / f"r{index}-{k}.tracemalloc") for k in ("base", "open", "streaming")}
        for after, before in (("open", "base"), ("streaming", "open")):
            print(f"\ntracemalloc, {after} - {before}, by line (where | B per stream | blocks per stream | code):\n")
            print("\n".join(by_line(path[after], path[before], n, args.top, "lineno")))
            print(f"\ntracemalloc, {after} - {before}, by traceback:\n")
            print("\n".join(by_line(path[after], path[before], n, args.top // 2, "traceback", args.frames)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--hold-tokens", type=int, default=30, help="reply length, in tokens 1 s apart")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", help="another checkout (with its .venv's packages) to run first in each repeat")
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: no tracing)")
    parser.add_argument("--objects", action="store_true", help="count gc-tracked objects by type (no tracing)")
    parser.add_argument("--frames", type=int, default=8, help="frames printed per traceback")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--server", default="daphne", choices=SERVERS, help="the server for this tree's rounds")
    parser.add_argument("--python", default=str(ROOT / ".venv-alt" / "bin" / "python"),
                        help="the interpreter for --server other than daphne")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for this tree's rounds (repeatable)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
