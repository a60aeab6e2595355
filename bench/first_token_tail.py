"""When, in a C=200 round, do the slow first tokens come? Their times against the round's course.

    .venv/bin/python bench/first_token_tail.py [--rounds 2] [--slow-ms 25] [--gap-ms 10]

One daphne as served (`python -m chatsite.serve`, SQLite), warmed; then relay rounds of bench/run.py's
kind (C=200, 200-token replies, three per connection, the conversations' starts spread over one
reply). For each first token: when the mock wrote it, and its overhead (its arrival at the client
minus that). Printed per round: p50 / p99, the slow ones (over --slow-ms) as `seconds since the
round's first token:overhead ms`, and per quarter second how many first tokens came and how many
were slow. With `loop_lag` on, daphne's event-loop stalls over 5 ms are in lag-<pid>.log of the
run's directory (time.time() in the second column, as the mock's), to set against them.
"""

import argparse
import asyncio
import collections
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rounds import Round, model_name, percentile, run_round  # noqa: E402
from bench.run import warm  # noqa: E402
from bench.servers import Servers  # noqa: E402


async def main(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    servers = Servers(workdir, f"sqlite:///{workdir}/db.sqlite3")
    servers.models = [f"mock/{model_name(g, t)}" for g in sorted({args.gap_ms, 10}) for t in (1, 5, 200)]
    servers.patches = ["loop_lag", "gc_log"]
    try:
        servers.start_mock()
        servers.migrate()
        servers.start_daphne(1)
        await warm(servers)
        for index in range(args.rounds):
            result = await run_round(Round("relay", 200, args.gap_ms, 200, 3, f"tail-{index}"), servers)
            captured = list(zip(result["_ttft_at"], result["_ttft"], strict=True))
            start = min(t for t, _ in captured)
            overheads = [o for _, o in captured]
            slow = sorted((t - start, o) for t, o in captured if o > args.slow_ms)
            print(f"\nround {index}: {len(overheads)} first tokens, overhead p50 {percentile(overheads, 50):.1f} "
                  f"/ p99 {percentile(overheads, 99):.1f} ms; {len(slow)} over {args.slow_ms} ms")
            print("slow ones (s since the round's first:ms):", " ".join(f"{t:.2f}:{o:.0f}" for t, o in slow))
            every = collections.Counter(int((t - start) / 0.25) for t, _ in captured)
            slow_every = collections.Counter(int(t / 0.25) for t, _ in slow)
            print("per 0.25 s (from s: first tokens/slow):",
                  " ".join(f"{k * 0.25:.2f}:{every[k]}/{slow_every.get(k, 0)}" for k in sorted(every)))
        print(f"\nlogs (lag-<pid>.log, gc-<pid>.log) in {workdir}")
    finally:
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slow-ms", type=float, default=25)
    parser.add_argument("--gap-ms", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
