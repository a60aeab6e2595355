"""The fixed CPU cost of one conversation, part by part, read from daphne's /proc around each part.

    .venv/bin/python bench/conversation.py                         # this tree, 3 repeats
    .venv/bin/python bench/conversation.py --baseline ../base      # and another checkout, interleaved
    .venv/bin/python bench/conversation.py --repeat 1 --n 2000 --profile /tmp/prof   # py-spy each part

A conversation is what the page does: `GET /` (no cookie: a first visit), `POST /session/` (the
page's first send asks for a session), the websocket handshake with that session, then one reply
(here 1 token, so what is measured is the reply's fixed cost: `start`, the records, `done`). Each
part runs N times, C at a time, on a fresh, warmed daphne (as served: `python -m chatsite.serve`,
SQLite, the in-memory layer and cache), and its CPU (utime + stime of every thread) is divided by
N. The mock upstream answers in 1 ms.
"""

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import client  # noqa: E402
from bench.rounds import model_name  # noqa: E402
from bench.run import warm  # noqa: E402
from bench.servers import BUDGETS, ROOT, Servers, cpu_seconds  # noqa: E402

PARTS = ("page GET", "session POST", "handshake", "1-token reply", "close")
MODEL = model_name(1, 1, ttft_ms=1)


def say(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


async def in_parallel(n, c, make):
    gate = asyncio.Semaphore(c)

    async def one(i):
        async with gate:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def one_round(args, servers):
    """Return {part: CPU ms per item} for one fresh process."""
    port = servers.start_daphne(1)[0]
    pid = servers.pids[0]
    await warm(servers)
    await asyncio.sleep(0.5)
    host = "127.0.0.1"
    n, c = args.n, args.c
    out = {}

    async def part(name, make):
        spies = profile(args, pid, name)
        before = cpu_seconds(pid)
        result = await in_parallel(n, c, make)
        await asyncio.sleep(0.3)  # what the part left to finish (a thread's last writes)
        out[name] = (cpu_seconds(pid) - before) * 1000 / n
        for spy in spies or ():
            spy.send_signal(2)
        for spy in spies or ():
            spy.wait(30)
        return result

    async def page(i):
        status, cookies = await client.http(host, port, f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
        assert status.startswith("HTTP/1.1 200"), status
        return cookies["csrftoken"]

    tokens = await part("page GET", page)

    async def session(i):
        token = tokens[i]
        status, cookies = await client.http(
            host, port,
            f"POST /session/ HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: csrftoken={token}\r\nX-CSRFToken: {token}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n")
        assert "sessionid" in cookies, status
        return cookies["sessionid"]

    sessions = await part("session POST", session)
    sockets = await part("handshake", lambda i: client.open_socket(host, port, session=sessions[i]))

    async def reply(i):
        req = sockets[i].send(f"conversation-{time.monotonic_ns()}-{i}", "mock/" + MODEL)
        await asyncio.wait_for(asyncio.shield(req.done), 30)
        assert req.status == "completed", (req.status, req.error)

    await part("1-token reply", reply)
    await part("close", lambda i: sockets[i].close())
    out["all-in"] = sum(out[p] for p in PARTS)
    say("  ".join(f"{k} {v:.2f}" for k, v in out.items()), "(ms of daphne CPU each)")
    return out


def profile(args, pid, name):
    """With --profile DIR, py-spy daphne during part `name`: DIR/<part>.txt samples every thread that is
    not idle (one waiting for the GIL counts), DIR/<part>-gil.txt only the thread holding the GIL
    (native work done without it, e.g. inside SQLite, is missed); raw (collapsed) stacks."""
    if not args.profile:
        return None
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    raw = Path(args.profile) / name.replace(" ", "-")
    raw.parent.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([py_spy, "record", "--nonblocking", "-r", "1000", "-f", "raw", "-o", f"{raw}{suffix}.txt",
                               "-p", str(pid), "-d", "600", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for suffix, flags in (("", []), ("-gil", ["--gil"]))]
    time.sleep(0.5)  # py-spy attaches
    return spies


async def main(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-conversation-"))
    servers = Servers(workdir, f"sqlite:///{workdir}/db.sqlite3")
    servers.models = [f"mock/{model_name(10, 5)}", f"mock/{MODEL}"]
    if args.budgets:
        servers.extra_env = dict(BUDGETS)
    say(f"logs and database in {workdir}")
    rounds = {"baseline": [], "this tree": []}
    try:
        servers.start_mock()
        servers.migrate()
        for _ in range(args.repeat):
            if args.baseline:
                servers.root = Path(args.baseline).resolve()
                say(f"baseline {servers.root}")
                rounds["baseline"].append(await one_round(args, servers))
                servers.root = ROOT
            say(f"this tree {ROOT}")
            rounds["this tree"].append(await one_round(args, servers))
    finally:
        servers.stop()
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"\n{args.n} of each part, {args.c} at a time, {args.repeat} fresh process(es) per tree; "
          f"medians of daphne CPU ms per item{'; budgets on' if args.budgets else ''}; load average {load}\n")
    names = [k for k, v in rounds.items() if v]
    print("| part | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in (*PARTS, "all-in"):
        cells = [f"{statistics.median(r[key] for r in rounds[name]):.2f}" for name in names]
        print(f"| {key} | " + " | ".join(cells) + " |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="items per part (default 200)")
    parser.add_argument("--c", type=int, default=10, help="at a time (default 10)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="another checkout to run first in each repeat")
    parser.add_argument("--budgets", action="store_true",
                        help="daily budgets in force (person, address, site): every reply reserves and settles them")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy (pip install py-spy) daphne during each part, into DIR/<part>.txt and <part>-gil.txt; "
                             "the CPU figures then include the sampler's cost")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
