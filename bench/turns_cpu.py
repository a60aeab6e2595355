"""The database thread's work per reply, in-process: `turns.start` and `turns.store` on the real models.

    .venv/bin/python bench/turns_cpu.py                       # SQLite as served (WAL), a fresh file
    .venv/bin/python bench/turns_cpu.py --budgets             # with a person's, address and site budget
    DATABASE_URL=postgres://... .venv/bin/python bench/turns_cpu.py --database-url env
    .venv/bin/python bench/turns_cpu.py --redis redis://127.0.0.1:6379/12   # rate limits counted in Redis
    .venv/bin/python bench/turns_cpu.py --statements          # each statement of one start and one store
    .venv/bin/python bench/turns_cpu.py --driver              # the thread CPU inside the driver, per statement
    .venv/bin/python bench/turns_cpu.py --root ../main        # another checkout's code (alternate runs to A/B)

Runs N replies (a new anonymous conversation each, 1 token, priced model) on this thread and
prints the thread's CPU per `start` and per `store` (medians over repeats), and the statements
each one runs. What the one database thread of a served process spends on each reply.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="replies per repeat (default 500)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budgets", action="store_true", help="person, address and site budgets in force")
    parser.add_argument("--database-url", default="", help="'env' to use DATABASE_URL (default: a fresh SQLite file)")
    parser.add_argument("--statements", action="store_true", help="print each statement of one start and store")
    parser.add_argument("--profile", default="", help="cProfile both into this file")
    parser.add_argument("--redis", default="", metavar="URL",
                        help="the cache on Redis at URL, with the person's and the address's rate limits counted "
                             "(too high to refuse)")
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose code runs (default: this one)")
    parser.add_argument("--driver", action="store_true",
                        help="also the thread CPU inside the database driver per kind of statement, and in commits")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.root).resolve()))

    workdir = tempfile.mkdtemp(prefix="turns-cpu-")
    if args.database_url != "env":
        os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/db.sqlite3"
    os.environ.update(SECRET_KEY="bench", DJANGO_SETTINGS_MODULE="chatsite.settings", LOG_LEVEL="WARNING",
                      CHAT_RATE_LIMIT="0", CHAT_IP_RATE_LIMIT="0")
    if args.budgets:
        os.environ.update(CHAT_DAILY_BUDGET_USD="1000000", CHAT_SITE_DAILY_BUDGET_USD="100000000")
    os.environ.pop("REDIS_URL", None)
    if args.redis:
        os.environ.update(REDIS_URL=args.redis, CHAT_RATE_LIMIT="1000000", CHAT_IP_RATE_LIMIT="1000000")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from billing.models import ModelPrice
    from chat.providers import Call, Usage
    from chat.turns import Outcome, Owner, _start, store
    from chat import limits

    call_command("migrate", verbosity=0)
    model = "bench/priced"
    ModelPrice.objects.get_or_create(model=model, defaults={"input_per_mtok": 1, "output_per_mtok": 2,
                                                            "effective_from": timezone.now().replace(year=2020)})

    def reply(i):
        owner = Owner(None, f"session-{i % 50:04d}".ljust(32, "x"), "198.51.100.7")
        request = {"content": "tell me about streaming", "conversation": None, "model": model, "stream": True}
        t0 = time.thread_time()
        allowance = limits.check(owner, model)
        turn = _start(owner, request, allowance)
        t1 = time.thread_time()
        turn.call.usage = Usage(prompt_tokens=20, completion_tokens=1)
        turn.call.opened = True
        store(turn, Outcome(text="Hi", reason="", error="", ttft_ms=3, duration_ms=5, delivered=1))
        t2 = time.thread_time()
        return t1 - t0, t2 - t1

    for i in range(50):  # warm
        reply(i)
    if args.statements:
        for name, index in (("start", 0), ("store", 1)):
            with CaptureQueriesContext(connection) as captured:
                owner_i = 7
                owner = Owner(None, f"session-{owner_i:04d}".ljust(32, "x"), "198.51.100.7")
                request = {"content": "hi", "conversation": None, "model": model, "stream": True}
                turn = _start(owner, request, limits.check(owner, model))
                start_n = len(captured.captured_queries)
                turn.call.usage = Usage(prompt_tokens=20, completion_tokens=1)
                store(turn, Outcome(text="Hi", reason="", error="", ttft_ms=3, duration_ms=5, delivered=1))
            queries = captured.captured_queries
            part = queries[:start_n] if index == 0 else queries[start_n:]
            print(f"-- {name}: {len(part)} statements")
            for q in part:
                print(f"   {q['time']}  {q['sql'][:160]}")
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(args.n):
            reply(i)
        profiler.disable()
        profiler.dump_stats(args.profile)
    if args.driver:
        import re
        from collections import defaultdict

        spent = defaultdict(lambda: [0, 0.0])
        words = re.compile(r'^\s*(\w+(?: OR IGNORE)?)(?:.*?(?:FROM|INTO|UPDATE)\s+"?(\w+)"?)?', re.S)

        def timed(execute, sql, params, many, context):
            t = time.thread_time()
            try:
                return execute(sql, params, many, context)
            finally:
                m = words.match(sql)
                key = f"{m.group(1)} {m.group(2) or ''}" if m else sql[:30]
                spent[key][0] += 1
                spent[key][1] += time.thread_time() - t

        connection.ensure_connection()
        raw_commit = connection.connection.commit if connection.vendor == "sqlite" else None
        with connection.execute_wrapper(timed):
            times = [reply(i) for i in range(args.n)]
        total = sum(a + b for a, b in times)
        print(f"driver time per reply (of {total / args.n * 1000:.3f} ms thread CPU in all):")
        for key, (count, seconds) in sorted(spent.items(), key=lambda kv: -kv[1][1]):
            print(f"  {seconds / args.n * 1000:7.3f} ms  {count / args.n:4.1f}x  {key}")
    starts, stores = [], []
    for _ in range(args.repeat):
        times = [reply(i) for i in range(args.n)]
        starts.append(sum(t[0] for t in times) / args.n * 1000)
        stores.append(sum(t[1] for t in times) / args.n * 1000)
    print(f"{args.root}: {connection.vendor}, budgets {'on' if args.budgets else 'off'}{', rate limits on Redis' if args.redis else ''}: thread CPU ms per reply "
          f"(median of {args.repeat} x {args.n}): start {statistics.median(starts):.3f} "
          f"(runs {', '.join(f'{s:.3f}' for s in starts)}), store {statistics.median(stores):.3f} "
          f"(runs {', '.join(f'{s:.3f}' for s in stores)})")


if __name__ == "__main__":
    main()
