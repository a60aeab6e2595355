"""A/B of the relay's upstream read path and event loop: the same rounds through fresh daphnes, interleaved.

    .venv/bin/python bench/variants.py [--variants httpcore,aiohttp,uvloop] [--levels 50:10,200:20] [--repeat 3]

Variants: `httpcore` is plain daphne on asyncio with the shared client on httpx's default transport
(the read path before httpx-aiohttp); `aiohttp` is plain daphne on asyncio with the transport as
shipped; `uvloop` is `python -m chatsite.serve` (uvloop and the shipped transport, as served).
For each repeat, each variant gets a fresh daphne, is warmed, then runs at each level a 200-token
and a 1-token relay round. Relay CPU per token = (CPU/request at 200 − at 1) / 199; the mock's own
CPU per token is its CPU in the 200-token round / tokens. Medians of the repeats, with the load
average at the end of the run. The machine is shared: compare variants within one run only.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rounds import Round, model_name, percentile, run_round  # noqa: E402
from bench.run import parse_levels, say, warm  # noqa: E402
from bench.servers import DAPHNE, PYTHON, Servers  # noqa: E402

VARIANTS = {
    "httpcore": ([DAPHNE], ["httpcore_transport"]),
    "aiohttp": ([DAPHNE], []),
    "uvloop": ([PYTHON, "-m", "chatsite.serve"], []),
}


async def main(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-variants-"))
    servers = Servers(workdir, f"sqlite:///{workdir}/db.sqlite3")
    levels = parse_levels(args.levels)
    servers.models = [f"mock/{model_name(g, t)}" for g in sorted({g for _, g in levels} | {10}) for t in (1, 5, args.tokens)]
    rounds = []
    try:
        servers.start_mock()
        servers.migrate()
        for repeat in range(args.repeat):
            for name in args.variants.split(","):
                servers.command, servers.patches = VARIANTS[name]
                servers.start_daphne(1)
                await warm(servers)
                for c, gap in levels:
                    for tokens in (args.tokens, 1):
                        n = 3 if tokens > 1 else 5
                        rnd = Round("relay", c, gap, tokens, n, f"{name}-c{c}-t{tokens}-r{repeat}")
                        res = await run_round(rnd, servers)
                        res.update(variant=name, repeat=repeat)
                        say(name, f"C={c} tok={tokens}", f"err={res['errors']}", f"{res['cpu_ms_per_request']:.2f} ms/req",
                            f"ttft+ p50={res['ttft_overhead_ms'][50]}", f"other={res['cpu_cores']['other']:.2f}")
                        rounds.append(res)
    finally:
        servers.stop()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"\n### Variants, {args.repeat} repeat(s), {args.tokens}-token replies, one daphne on SQLite; "
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
    say(f"logs in {workdir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="httpcore,aiohttp,uvloop")
    parser.add_argument("--levels", default="50:10,200:20")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
