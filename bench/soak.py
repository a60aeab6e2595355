"""Soak the production configuration: two daphnes on PostgreSQL and Redis, people chatting for MINUTES.

    .venv/bin/python bench/soak.py --minutes 15                 # ~100 people (docs/PERFORMANCE.md)
    .venv/bin/python bench/soak.py --minutes 1 --people 20      # the 60-second version in .ci/run

Starts the mock upstream and two daphne processes (DEBUG off, PostgreSQL, Redis, a per-person rate
limit high enough never to refuse) and lets people chat: each loads the page, opens the websocket
and sends message after message, waiting for the reply, stopping it (before or after its first
token) or dropping the socket mid-reply and coming back. Every 30 s it samples each daphne's RSS,
open files, CPU and sockets (to clients, the upstream, Redis, PostgreSQL; CLOSE-WAIT counted), the
Redis connections on its database, and the window's first-token latency. At the end it reconciles
sends, `start`s, `done`s, usage records, upstream requests, statuses and stored texts
(bench/reconcile.py), prints every difference and exits 1 if there is one.

It creates its own PostgreSQL database (--database, dropped afterwards) and uses --redis-url's
database number; nothing else may use that Redis database while it runs.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import people, procfs, reconcile  # noqa: E402
from bench.rounds import percentile  # noqa: E402
from bench.servers import ROOT, Servers, cpu_seconds, http, rss_kb  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_PORT, REDIS_PORT = 5432, 6379


def say(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


class SoakServers(Servers):
    """Servers in the production configuration: chatsite's own ASGI app, a rate limit that counts."""

    def env(self, flush_ms=None):
        env = super().env(flush_ms)
        # Every message passes the rate limit's Redis counter, as in production, without being refused;
        # the people all come from 127.0.0.1, so the per-address limit is off.
        env.update(CHAT_RATE_LIMIT="100000", CHAT_IP_RATE_LIMIT="0", DEBUG="0")
        return env


class Redis:
    """Counts the Redis connections on one database number (CLIENT LIST's `db` field)."""

    def __init__(self, url):
        import redis

        parts = urllib.parse.urlsplit(url)
        self.db = int(parts.path.lstrip("/") or 0)
        # Our own connection stays on database 0, so it is never counted.
        self.client = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or REDIS_PORT)

    def clients(self):
        """Return {client id: local address} of the connections on our database."""
        return {c["id"]: c["addr"] for c in self.client.client_list() if int(c.get("db", -1)) == self.db}

    def flush(self):
        self.client.execute_command("SELECT", self.db)
        self.client.flushdb()
        self.client.execute_command("SELECT", 0)


class Sampler:
    """Every `every` seconds, one line of what the daphnes hold and how fast first tokens came."""

    def __init__(self, servers, redis, ledger, every):
        self.servers, self.redis, self.ledger, self.every = servers, redis, ledger, every
        self.samples = []
        self.redis_ids = set()  # every Redis connection seen on our database
        self.last_cpu = None
        self.last_at = None
        self.counted = 0  # ledger entries already counted in a window

    def take(self):
        """Append a sample of the window since the last one; return it."""
        now = time.monotonic()
        pids = self.servers.pids
        cpu = [cpu_seconds(pid) for pid in pids]
        ports = {"upstream": self.servers.mock_port, "redis": REDIS_PORT, "postgres": PG_PORT}
        sockets = [procfs.peers(pid, ports) for pid in pids]
        redis_clients = self.redis.clients()
        self.redis_ids |= set(redis_clients)
        window = self.ledger[self.counted:]
        self.counted = len(self.ledger)
        ttft = [(s.first_at - s.sent_at) * 1000 for s in window if s.first_at is not None]
        sample = {
            "t": round(now - self.started),
            "sends": len(window),
            "rss_mib": [round(rss_kb(pid) / 1024, 1) for pid in pids],
            "fds": [procfs.open_fds(pid) for pid in pids],
            "cpu_cores": None if self.last_cpu is None else
            [round((c - p) / (now - self.last_at), 3) for c, p in zip(cpu, self.last_cpu)],
            "cpu_ms_per_send": None if self.last_cpu is None or not window else
            round((sum(cpu) - sum(self.last_cpu)) * 1000 / len(window), 2),
            "sockets": sockets,
            "upstream_close_wait": sum(s["upstream"].get("CLOSE_WAIT", 0) for s in sockets),
            "redis_connections": len(redis_clients),
            "redis_connections_ever": len(self.redis_ids),
            "ttft_ms": {p: None if not ttft else round(percentile(ttft, p), 1) for p in (50, 95, 99)},
            "loadavg": open("/proc/loadavg").read().split()[:3],
        }
        self.last_cpu, self.last_at = cpu, now
        self.samples.append(sample)
        return sample

    async def run(self, until):
        self.started = time.monotonic()
        self.take()
        while time.monotonic() < until:
            await asyncio.sleep(min(self.every, max(0.0, until - time.monotonic())))
            say(line(self.take()))


def line(sample):
    """Return a progress line for one sample."""
    t = sample["ttft_ms"]
    return (f"t={sample['t']:>4}s sends={sample['sends']:<5} rss={sample['rss_mib']} MiB fds={sample['fds']} "
            f"cpu={sample['cpu_cores']} cores {sample['cpu_ms_per_send']} ms/send  "
            f"redis={sample['redis_connections']} (ever {sample['redis_connections_ever']}) "
            f"upstream CLOSE_WAIT={sample['upstream_close_wait']}  ttft p50={t[50]} p95={t[95]} ms  "
            f"load={' '.join(sample['loadavg'])}")


async def wait_settled(servers, database_url, ledger, timeout=60):
    """Wait until every started reply has its record (dropped sockets are noticed a little later)."""
    started = {s.message for s in ledger if s.message is not None}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, records, _ = reconcile.stored(database_url)
        stats = await http(servers.mock_port, "/mock/stats?log=0")
        if started <= set(records) and stats["open_streams"] == 0:
            return
        await asyncio.sleep(0.5)


async def soak(args, servers, database_url, redis):
    """Run the people and the sampler; return (ledger, sampler, cpu seconds, wall seconds)."""
    ledger = []
    until = time.monotonic() + args.minutes * 60
    sampler = Sampler(servers, redis, ledger, args.sample_every)
    cpu0, wall0 = sum(cpu_seconds(pid) for pid in servers.pids), time.monotonic()
    client0 = cpu_seconds(os.getpid())
    retries = {"handshakes": 0}
    crowd = [people.person(i, "127.0.0.1", servers.ports, until, ledger, args.seed * 100_003 + i, retries)
             for i in range(args.people)]
    results = await asyncio.gather(sampler.run(until), *crowd, return_exceptions=True)
    wall = time.monotonic() - wall0
    cpu = sum(cpu_seconds(pid) for pid in servers.pids) - cpu0
    sampler.client_cores = (cpu_seconds(os.getpid()) - client0) / wall
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures[:5]:
        say(f"a person failed: {failure!r}")
    await wait_settled(servers, database_url, ledger)
    say(line(sampler.take()) + "  (after the last reply)")
    sampler.retries = retries
    return ledger, sampler, cpu, wall, failures


def tracebacks(workdir):
    """Return the daphne log lines that report an error."""
    found = []
    for log in sorted(Path(workdir).glob("daphne-*.log")):
        for text in log.read_text(errors="replace").splitlines():
            if "Traceback" in text or " ERROR " in text or text.startswith("ERROR"):
                found.append(f"{log.name}: {text[:200]}")
    return found


def report(args, ledger, sampler, cpu, wall, found, errors, failures):
    """Return the run's summary dict."""
    actions = {}
    for sent in ledger:
        actions[sent.action] = actions.get(sent.action, 0) + 1
    ttft = [(s.first_at - s.sent_at) * 1000 for s in ledger if s.first_at is not None]
    last = sampler.samples[-1]
    return {
        "command": " ".join(sys.argv), "minutes": args.minutes, "people": args.people, "processes": 2,
        "sends": len(ledger), "actions": actions, "wall_s": round(wall, 1),
        "daphne_cpu_s": round(cpu, 1), "daphne_cpu_ms_per_send": round(cpu * 1000 / max(len(ledger), 1), 2),
        "ttft_ms": {p: None if not ttft else round(percentile(ttft, p), 1) for p in (50, 95, 99)},
        "rss_mib_end": last["rss_mib"], "rss_mib_max": [max(s["rss_mib"][i] for s in sampler.samples)
                                                        for i in range(len(last["rss_mib"]))],
        "fds_end": last["fds"], "fds_max": [max(s["fds"][i] for s in sampler.samples) for i in range(len(last["fds"]))],
        "redis_connections_max": max(s["redis_connections"] for s in sampler.samples),
        "redis_connections_ever": len(sampler.redis_ids),
        "upstream_close_wait_end": last["upstream_close_wait"],
        "differences": len(found), "log_errors": len(errors), "people_failed": len(failures),
        "handshake_retries": sampler.retries["handshakes"], "client_cpu_cores": round(sampler.client_cores, 2),
        "loadavg_end": last["loadavg"], "samples": sampler.samples,
    }


def create_database(admin, name):
    subprocess.run(["psql", admin, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True)
    subprocess.run(["psql", admin, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True)


async def main(args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    admin = f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres"
    database_url = f"postgres://postgres@127.0.0.1:{PG_PORT}/{args.database}"
    redis = Redis(args.redis_url)
    redis.flush()
    create_database(admin, args.database)
    servers = SoakServers(workdir, database_url, args.redis_url, asgi="chatsite.asgi:application")
    servers.models = people.MODELS
    say(f"logs in {workdir}; database {args.database}; Redis {args.redis_url}; {args.people} people, "
        f"{args.minutes} min; load {open('/proc/loadavg').read().split()[:3]}")
    try:
        servers.start_mock("--log-size", "1000000", "--no-write-times")
        servers.migrate()
        servers.start_daphne(2)
        say(f"daphne x2 on ports {servers.ports} (pids {servers.pids})")
        ledger, sampler, cpu, wall, failures = await soak(args, servers, database_url, redis)
        upstream_log = (await http(servers.mock_port, "/mock/stats"))["log"]
        found, allowed = reconcile.differences(ledger, *reconcile.stored(database_url), upstream_log)
        errors = tracebacks(workdir)
    finally:
        servers.stop()
        if not args.keep:
            subprocess.run(["psql", admin, "-q", "-c", f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'])
            redis.flush()
    summary = report(args, ledger, sampler, cpu, wall, found, errors, failures)
    summary["allowed"] = allowed
    out = RESULTS / f"soak-{stamp}.json"
    out.write_text(json.dumps(summary, indent=1))
    say(f"{summary['sends']} sends {summary['actions']} in {summary['wall_s']} s; daphne CPU "
        f"{summary['daphne_cpu_ms_per_send']} ms per send; first token p50 {summary['ttft_ms'][50]} "
        f"p95 {summary['ttft_ms'][95]} ms; RSS max {summary['rss_mib_max']} MiB; fds max {summary['fds_max']}; "
        f"Redis connections max {summary['redis_connections_max']}, ever {summary['redis_connections_ever']}; "
        f"upstream CLOSE-WAIT at the end {summary['upstream_close_wait_end']}; {allowed}; "
        f"handshakes retried {summary['handshake_retries']}; this client used {summary['client_cpu_cores']} cores; load {summary['loadavg_end']}; saved {out}")
    if found or errors or failures:
        say(f"FAILED: {len(found)} differences, {len(errors)} error lines in the daphne logs, "
            f"{len(failures)} people failed")
        if found:
            print(reconcile.summary(found), flush=True)
        for text in errors[:10]:
            print("  " + text, flush=True)
        return 1
    say("reconciled: every send, start, done, record, upstream request, status and stored text agree")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15, help="how long people chat (default 15)")
    parser.add_argument("--people", type=int, default=100, help="people chatting at once (default 100)")
    parser.add_argument("--database", default="chatsite_soak",
                        help="PostgreSQL database to create, use and drop (default chatsite_soak)")
    parser.add_argument("--redis-url", default=os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/3"),
                        help="Redis database the daphnes use, flushed before and after (default db 3)")
    parser.add_argument("--sample-every", type=float, default=30, help="seconds between samples (default 30)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
