"""Benchmark the relay against the upstream it relays, side by side, in one run.

    .venv/bin/python bench/run.py                 # every level, 3 repeats (~8 minutes)
    .venv/bin/python bench/run.py --quick         # 1 repeat, fewer requests (~3 minutes)
    .venv/bin/python bench/run.py --processes 2   # two daphnes on PostgreSQL + Redis vs one
    .venv/bin/python bench/run.py --profile       # also py-spy the daphne process at C=200

Starts the mock upstream and daphne as subprocesses, drives C concurrent conversations through
/ws/chat/ (relay) and the same requests straight from the mock over HTTP (direct), prints a
markdown report and saves it, with every figure as JSON, in bench/results/. See docs/PERFORMANCE.md.
"""

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report  # noqa: E402
from bench.rounds import Round, model_name, run_round  # noqa: E402
from bench.servers import ROOT, Servers, rss_kb  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def parse_levels(text):
    """Return [(C, gap_ms)] from `1:10,50:10,200:20`."""
    return [tuple(int(x) for x in part.split(":")) for part in text.split(",") if part]


def per_client(c, tokens, quick):
    """Return how many requests each conversation sends one after another in a round."""
    if tokens <= 1:
        n = 20 if c == 1 else 5
    else:
        n = 8 if c == 1 else 3 if c <= 50 else 2
    return max(1, n // 2) if quick else n


def say(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


async def level_rounds(args, servers, c, gap, repeat, modes, tag=""):
    """Run direct and relay 200-token rounds and a relay 1-token round at one level; return them."""
    out = []
    relay_mode = "relay2" if "relay2" in modes else "relay"
    for mode, tokens in [(m, args.tokens) for m in modes] + [(relay_mode, 1)]:
        rnd = Round("direct" if mode == "direct" else "relay", c, gap, tokens, per_client(c, tokens, args.quick),
                    f"{mode}{tag}-c{c}-g{gap}-t{tokens}-r{repeat}", burst=args.burst)
        res = await run_round(rnd, servers)
        res["mode"], res["repeat"], res["variant"] = mode, repeat, tag or "default"
        say(report.one_line(res))
        out.append(res)
    return out


async def warm(servers, n=10):
    """Run a few short conversations so the process has imported and cached what it needs."""
    rnd = Round("relay", n, 10, 5, 2, f"warm-{time.monotonic_ns()}", burst=True)
    await run_round(rnd, servers)


async def memory_round(args, servers):
    """Hold N streams at one token a second on a fresh, warmed process; return the round."""
    servers.start_daphne(1)
    await warm(servers)
    await asyncio.sleep(1)
    base = rss_kb(servers.pids[0])
    rnd = Round("relay", args.streams, 1000, args.hold_tokens, 1, f"hold-{args.streams}")
    rnd.reply_s = min(rnd.reply_s, 10.0)  # spread the sends over 10 s; each stream lasts hold_tokens s
    res = await run_round(rnd, servers)
    res.update(variant="hold", repeat=0, rss_fresh_base_kb=base,
               rss_kb_per_open_stream=(res["rss_peak_kb"] - base) / args.streams)
    say(report.one_line(res), f"peak RSS {res['rss_peak_kb']} KB, base {base} KB")
    return res


async def profile_round(args, servers, out):
    """Record daphne with py-spy during a C=200 relay round; return the summary."""
    py_spy = (shutil.which("py-spy", path=str(Path(sys.executable).parent))
              or shutil.which("py-spy", path=str(ROOT / ".venv-bench" / "bin")) or shutil.which("py-spy"))
    if not py_spy:
        say("py-spy not found: pip install -r bench/requirements.txt")
        return None
    c, gap = args.profile_level
    # Two samplers: every thread that is not idle (a thread waiting for the GIL counts), and only
    # the thread holding the GIL (native work done without it, e.g. inside SQLite, is missed).
    raws = {"all threads": out.with_suffix(".pyspy.txt"), "GIL holder": out.with_suffix(".pyspy-gil.txt")}
    rnd = Round("relay", c, gap, args.tokens, per_client(c, args.tokens, False), f"profile-c{c}", burst=args.burst)
    spies = [subprocess.Popen([py_spy, "record", "--nonblocking", "-r", "100", "-f", "raw", "-o", str(raw),
                               "-p", str(servers.pids[0]), "-d", "600"] + (["--gil"] if "GIL" in name else []),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, raw in raws.items()]
    await asyncio.sleep(1.0)
    res = await run_round(rnd, servers)
    for spy in spies:
        spy.send_signal(2)
    for spy in spies:
        spy.wait(30)
    say(report.one_line(res), "(under py-spy)")
    from bench.profile_summary import summarize

    summaries = {name: summarize(raw, res, label=name) for name, raw in raws.items()}
    markdown = "\n\n".join(s["markdown"] for s in summaries.values())
    return {"round": res, "files": {k: str(v) for k, v in raws.items()}, "summaries": summaries,
            "summary": {"markdown": markdown}}


async def main(args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"run-{stamp}{'-p2' if args.processes > 1 else ''}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    levels = parse_levels(args.levels)
    redis_url, pg_name = "", None
    if args.processes > 1:
        pg_name = f"bench_{stamp.replace('-', '_')}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", pg_name], check=True)
        database_url, redis_url = f"postgres://postgres@127.0.0.1:5432/{pg_name}", args.redis_url
    else:
        database_url = f"sqlite:///{workdir}/db.sqlite3"
    servers = Servers(workdir, database_url, redis_url, asgi=args.asgi, patches=args.patch)
    gaps = {g for _, g in levels} | {1000, 10}
    servers.models = [f"mock/{model_name(g, t)}" for g in sorted(gaps) for t in (1, 5, args.tokens, args.hold_tokens)]
    say(f"logs and database in {workdir}")
    rounds, extra = [], {}
    try:
        servers.start_mock()
        servers.migrate()
        counts = [1, args.processes] if args.processes > 1 else [1]
        for count in counts:
            servers.start_daphne(count)
            await warm(servers)
            say(f"daphne x{count} on ports {servers.ports} (pids {servers.pids})")
            for repeat in range(args.repeat):
                for c, gap in levels:
                    modes = ["direct", "relay"] if count == counts[0] else []
                    modes = modes + (["relay2"] if count > 1 else [])
                    tag = "" if count == 1 else "-p2"
                    rounds += await level_rounds(args, servers, c, gap, repeat, modes, tag)
            if count == 1 and args.profile:
                extra["profile"] = await profile_round(args, servers, out)
        if args.processes == 1:
            for flush in args.flush_variants:
                servers.start_daphne(1, flush_ms=flush)
                await warm(servers)
                c, gap = args.flush_level
                for repeat in range(args.repeat):
                    rnd = Round("relay", c, gap, args.tokens, per_client(c, args.tokens, args.quick),
                                f"flush{flush}-c{c}-r{repeat}", burst=args.burst)
                    res = await run_round(rnd, servers)
                    res.update(mode=f"relay flush={flush}", repeat=repeat, variant=f"flush{flush}")
                    say(report.one_line(res))
                    rounds.append(res)
            if args.streams:
                extra["hold"] = await memory_round(args, servers)
    finally:
        servers.stop()
        if pg_name:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", pg_name])
    summary = report.build(rounds, extra, args)
    text = report.markdown(summary, args)
    out.with_suffix(".json").write_text(json.dumps(report.strip(summary, rounds, extra), indent=1, default=str))
    out.with_suffix(".md").write_text(text)
    print()
    print(text)
    say(f"saved {out}.json and {out}.md")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="", help="C:gap_ms pairs (default 1:10,50:10,200:20; with "
                        "--processes 2: 50:10,200:20,200:10)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per level; medians are reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 repeat and half the requests")
    parser.add_argument("--burst", action="store_true", help="start all C conversations at once (default: spread "
                        "over one reply, so the load is steady)")
    parser.add_argument("--processes", type=int, default=1, help="2: compare two daphnes (PostgreSQL + Redis) "
                        "with one at the same load")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--flush-variants", default="0,10", help="CHAT_FLUSH_MS values to rerun at --flush-level "
                        "('' for none)")
    parser.add_argument("--flush-level", default="50:10")
    parser.add_argument("--streams", type=int, default=1000, help="open streams held at 1 token/s (0: skip)")
    parser.add_argument("--hold-tokens", type=int, default=30, help="length of a held stream, in 1 s tokens")
    parser.add_argument("--profile", action="store_true", help="py-spy daphne during a --profile-level round")
    parser.add_argument("--profile-level", default="200:20")
    parser.add_argument("--asgi", default="bench.counting_asgi:application",
                        help="the app daphne serves (chatsite.asgi:application: no SQL counts)")
    parser.add_argument("--patch", action="append", default=[], choices=["httpcore_transport"],
                        help="apply an experiment from bench/counting_asgi.py in daphne (see docs/PERFORMANCE.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    if not args.levels:
        args.levels = "50:10,200:20,200:10" if args.processes > 1 else "1:10,50:10,200:20"
    args.flush_variants = [int(x) for x in args.flush_variants.split(",") if x.strip()]
    args.flush_level = parse_levels(args.flush_level)[0]
    args.profile_level = parse_levels(args.profile_level)[0]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
