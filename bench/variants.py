"""A/B of the relay's upstream read path and event loop: the same rounds through fresh daphnes, interleaved.

    .venv/bin/python bench/variants.py [--variants httpcore,aiohttp,uvloop] [--levels 50:10,200:20] [--repeat 3]

`--measure-pauses` also logs, in each daphne, every collection of the garbage collector (generation,
duration) and every stall of the event loop over 5 ms (a 1 ms sleeper's lateness), and reports per
variant how many stalls there were, how long they lasted in all, and how much of that overlapped a
collection; and each reply's time in `turns.start` (waiting for the one database thread, then its
transaction), which precedes the upstream request and so adds to the time to first token a person
sees, though not to the first-token overhead (measured from the mock's first token).

Variants: `gc-default` is `uvloop` before the collector's tuning in chatsite/serve.py; `httpcore` is plain daphne on asyncio with the shared client on httpx's default transport
(the read path before httpx-aiohttp); `aiohttp` is plain daphne on asyncio with the transport as
shipped; `uvloop` is `python -m chatsite.serve` (uvloop and the shipped transport, as served);
`baseline` is the same run from another checkout (`--baseline DIR`: before and after in one run).
`--budgets` puts daily budgets in force (person, address, site; too large to refuse), so every
reply reserves and settles them, as a public deployment would.
For each repeat, each variant gets a fresh daphne, is warmed, then runs at each level a 200-token
and a 1-token relay round. Relay CPU per token = (CPU/request at 200 − at 1) / 199; the mock's own
CPU per token is its CPU in the 200-token round / tokens. Medians of the repeats, with the load
average at the end of the run. The machine is shared: compare variants within one run only.
"""

import argparse
import asyncio
import statistics
import sys
import time
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rounds import Round, model_name, percentile, run_round  # noqa: E402
from bench.run import parse_levels, say, warm  # noqa: E402
from bench.servers import BUDGETS, DAPHNE, PYTHON, ROOT, Servers  # noqa: E402

VARIANTS = {
    "httpcore": ([DAPHNE], ["httpcore_transport"]),
    "aiohttp": ([DAPHNE], []),
    "uvloop": ([PYTHON, "-m", "chatsite.serve"], []),
    "switch-1ms": ([PYTHON, "-m", "chatsite.serve"], ["switch_1ms"]),
    # chatsite.serve with twisted's buffered transport writes instead of lean_daphne's WriteThrough
    "buffered-writes": ([PYTHON, "-m", "chatsite.serve"], ["buffered_writes"]),
    # chatsite.serve with each reply's upstream response left as cyclic garbage, as before
    "response-cycle": ([PYTHON, "-m", "chatsite.serve"], ["response_cycle"]),
    # chatsite.serve before the garbage collector's tuning (its uvloop, Python's collector defaults)
    # `uvloop` run from the checkout given by --baseline
    "baseline": ([PYTHON, "-m", "chatsite.serve"], []),
    "gc-default": ([PYTHON, "-c", "from chatsite.loop import install_loop_policy\ninstall_loop_policy()\n"
                    "from daphne.cli import CommandLineInterface\nCommandLineInterface.entrypoint()"], []),
}


async def main(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-variants-"))
    servers = Servers(workdir, f"sqlite:///{workdir}/db.sqlite3")
    levels = parse_levels(args.levels)
    servers.models = [f"mock/{model_name(g, t)}" for g in sorted({g for _, g in levels} | {10}) for t in (1, 5, args.tokens)]
    rounds = []
    pids = {}
    if args.budgets:
        servers.extra_env = dict(BUDGETS)
    try:
        servers.start_mock()
        servers.migrate()
        for repeat in range(args.repeat):
            for name in args.variants.split(","):
                servers.command, servers.patches = VARIANTS[name]
                servers.root = Path(args.baseline).resolve() if name == "baseline" else ROOT
                if args.measure_pauses:
                    servers.patches = [*servers.patches, "gc_log", "loop_lag", "phases"]
                servers.start_daphne(1)
                pids.setdefault(name, []).extend(servers.pids)
                await warm(servers)
                for c, gap in levels:
                    for tokens in (args.tokens, 1):
                        n = 3 if tokens > 1 else 5
                        rnd = Round("relay", c, gap, tokens, n, f"{name}-c{c}-t{tokens}-r{repeat}")
                        began = time.time()
                        res = await run_round(rnd, servers)
                        res.update(variant=name, repeat=repeat, span=(began, time.time()), pids=servers.pids)
                        say(name, f"C={c} tok={tokens}", f"err={res['errors']}", f"{res['cpu_ms_per_request']:.2f} ms/req",
                            f"ttft+ p50={res['ttft_overhead_ms'][50]}", f"other={res['cpu_cores']['other']:.2f}")
                        rounds.append(res)
    finally:
        servers.stop()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"\n### Variants, {args.repeat} repeat(s), {args.tokens}-token replies, one daphne on SQLite"
          f"{' (baseline: ' + args.baseline + ')' if args.baseline else ''}{', budgets on' if args.budgets else ''}; "
          f"load average at the end {' '.join(load)}\n")
    print("| level | variant | relay CPU µs/token (each) | mock CPU µs/token | ratio | CPU ms/request (1 token) "
          "| first-token overhead p50 / p99 ms | tokens/s | errors |\n|---|---|---|---:|---:|---:|---|---:|---:|")
    for c, gap in levels:
        for name in args.variants.split(","):
            long = sorted((r for r in rounds if r["variant"] == name and r["c"] == c and r["tokens"] == args.tokens),
                          key=lambda r: r["repeat"])
            short = sorted((r for r in rounds if r["variant"] == name and r["c"] == c and r["tokens"] == 1),
                           key=lambda r: r["repeat"])
            each = [(a["cpu_ms_per_request"] - b["cpu_ms_per_request"]) * 1000 / (args.tokens - 1)
                    for a, b in zip(long, short)]
            mock = [r["cpu_cores"]["mock"] * r["wall_s"] * 1e6 / max(r["tokens_received"], 1) for r in long]
            ttft = [x for r in long for x in r["_ttft"]]
            relay, upstream = statistics.median(each), statistics.median(mock)
            print(f"| C={c} gap {gap} | {name} | {relay:.0f} ({', '.join(f'{x:.0f}' for x in each)}) "
                  f"| {upstream:.0f} | {relay / upstream:.1f}× | {statistics.median(r['cpu_ms_per_request'] for r in short):.2f} "
                  f"| {percentile(ttft, 50):.2f} / {percentile(ttft, 99):.2f} "
                  f"| {statistics.median(r['tokens_per_s'] for r in long):.0f} "
                  f"| {sum(r['errors'] + r['timeouts'] for r in long + short)} |")
    if args.measure_pauses:
        print("\n| variant | loop stalls > 5 ms | stalled s in all | of it during a collection | stalls > 50 ms "
              "| longest ms | collections' ms in all | full collections (longest ms) |\n|---|---:|---:|---:|---:|---:|---:|---|")
        for name in args.variants.split(","):
            p = [pauses(workdir, pid) for pid in pids[name]]
            print(f"| {name} | {sum(x['stalls'] for x in p)} | {sum(x['stalled_ms'] for x in p) / 1000:.1f} "
                  f"| {sum(x['during_gc_ms'] for x in p) / 1000:.1f} | {sum(x['over_50'] for x in p)} "
                  f"| {max(x['longest'] for x in p):.0f} | {sum(x['gc_ms'] for x in p):.0f} "
                  f"| {sum(x['full'] for x in p)} ({max(x['full_longest'] for x in p):.0f}) |")
        print("\nThe wait for and time in `turns.start` (the one database thread) before the upstream request, "
              "ms, p50 / p99, by round:\n\n| variant | level | 200-token round | 1-token round |\n|---|---|---|---|")
        for name in args.variants.split(","):
            for c, gap in levels:
                cells = []
                for tokens in (args.tokens, 1):
                    waits = sorted(w for r in rounds if r["variant"] == name and r["c"] == c and r["tokens"] == tokens
                                   for w in start_waits(workdir, r))
                    cells.append(f"{percentile(waits, 50):.1f} / {percentile(waits, 99):.1f}" if waits else "–")
                print(f"| {name} | C={c} gap {gap} | {cells[0]} | {cells[1]} |")
    say(f"logs in {workdir}")


def start_waits(workdir, rnd):
    """The turns.start times (bench/counting_asgi.py's phases) of the replies whose first delta was sent
    within the round."""
    began, ended = rnd["span"]
    out = []
    for pid in rnd["pids"]:
        path = workdir / f"phases-{pid}.log"
        if path.exists():
            for line in path.read_text().splitlines():
                start_ms, _, at = line.split()
                if began <= float(at) <= ended:
                    out.append(float(start_ms))
    return out


def pauses(workdir, pid):
    """Sum one daphne's loop stalls and collections (bench/counting_asgi.py's gc_log and loop_lag)."""
    def rows(kind):
        path = workdir / f"{kind}-{pid}.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    collections = [(int(g), float(ms), float(end)) for g, ms, _, end in rows("gc")]
    spans = [(end - ms / 1000, end) for _, ms, end in collections]
    stalls = [(float(ms), float(end)) for ms, end in rows("lag")]
    return {
        "stalls": len(stalls),
        "stalled_ms": sum(ms for ms, _ in stalls),
        "during_gc_ms": sum(ms for ms, end in stalls
                            if any(a - 0.003 <= end and end - ms / 1000 <= b + 0.003 for a, b in spans)),
        "over_50": sum(1 for ms, _ in stalls if ms > 50),
        "longest": max((ms for ms, _ in stalls), default=0),
        "gc_ms": sum(ms for _, ms, _ in collections),
        "full": sum(1 for g, _, _ in collections if g == 2),
        "full_longest": max((ms for g, ms, _ in collections if g == 2), default=0),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="httpcore,aiohttp,uvloop")
    parser.add_argument("--levels", default="50:10,200:20")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure-pauses", action="store_true",
                        help="log the collector's collections and the loop's stalls in each daphne; report them")
    parser.add_argument("--baseline", default="", help="another checkout: the variant `baseline` runs it as served")
    parser.add_argument("--budgets", action="store_true",
                        help="daily budgets (person, address, site) in force: reserved and settled on every reply")
    parsed = parser.parse_args()
    if "baseline" in parsed.variants.split(",") and not parsed.baseline:
        parser.error("the variant `baseline` needs --baseline DIR")
    asyncio.run(main(parsed))
