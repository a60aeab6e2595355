"""Does a database thread wait out the GIL's switch interval at every statement while the event loop is busy?

    .venv/bin/python bench/gil_wait.py [--statements 3000] [--busy 0.85]

One thread runs N small SQLite transactions (BEGIN IMMEDIATE, an INSERT, COMMIT, with a little Python
between, as an ORM does; a file database in WAL mode with synchronous=NORMAL, as chatsite's settings
open it), first alone, then beside an asyncio loop kept busy BUSY of the time in 8.5 ms stretches of
pure Python (a loaded server's loop iterations), with the switch interval at 5 ms (Python's default)
and at 1 ms. If each statement's release of the GIL cost a wait of up to the switch interval, the
thread would take seconds beside the busy loop; if it only gets its share of one core, it takes
about its time alone divided by (1 - BUSY).
"""

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import threading
import time


def transactions(db, n):
    started = time.perf_counter()
    for _ in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t(b) VALUES ('x')")
        db.execute("COMMIT")
        for _ in range(300):  # a little Python between statements, as the ORM's
            pass
    return time.perf_counter() - started


async def beside_busy_loop(db, n, busy):
    stop, took = threading.Event(), []

    async def loop_work():
        stretch = 0.0085
        while not stop.is_set():
            began = time.perf_counter()
            while time.perf_counter() - began < stretch:
                pass
            await asyncio.sleep(stretch * (1 - busy) / busy)

    worker = asyncio.create_task(loop_work())
    await asyncio.sleep(0.05)
    thread = threading.Thread(target=lambda: took.append(transactions(db, n)))
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.001)
    stop.set()
    await worker
    return took[0]


def main(args):
    path = os.path.join(tempfile.mkdtemp(prefix="gil-wait-"), "db.sqlite3")
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
    print(f"{args.statements} transactions of 3 statements, loop busy {args.busy:.0%} (Python {sys.version.split()[0]})")
    for switch in (0.005, 0.001):
        sys.setswitchinterval(switch)
        alone = transactions(db, args.statements)
        beside = asyncio.run(beside_busy_loop(db, args.statements, args.busy))
        print(f"switch interval {switch * 1000:.0f} ms: alone {alone * 1000:.0f} ms, beside the busy loop "
              f"{beside * 1000:.0f} ms ({beside / alone:.1f}x; a fair share of the core would be "
              f"{1 / (1 - args.busy):.1f}x; a full switch interval per statement would be "
              f"{args.statements * 3 * switch * 1000:.0f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=3000, help="transactions (3 statements each)")
    parser.add_argument("--busy", type=float, default=0.85)
    main(parser.parse_args())
