"""The processes under test: the mock upstream and daphne, started as subprocesses, and what /proc says of them."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
DAPHNE = str(Path(PYTHON).parent / "daphne")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    """Return a TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    """Wait until `port` accepts connections; raise if `proc` died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[:3]} exited with {proc.returncode}: see its log")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def cpu_seconds(pid):
    """Return a process's utime + stime in seconds (all its threads, living and exited)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kb(pid):
    """Return a process's resident set size in KB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def tree_rss_kb(pid):
    """Return the resident set size in KB of a process and its descendants (granian serves from a
    worker process of its own)."""
    total = rss_kb(pid)
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            total += sum(tree_rss_kb(int(child)) for child in f.read().split())
    return total


def system_busy():
    """Return (busy, total) CPU seconds of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK, sum(values[:8]) / TICK


# `--budgets` of bench/variants.py and bench/conversation.py: a person's, an address's and the site's
# daily budget in force (too large to refuse anything), reserved and settled on every reply, the
# mock's unpriced models at a fallback price.
BUDGETS = {"CHAT_DAILY_BUDGET_USD": "1000000", "CHAT_SITE_DAILY_BUDGET_USD": "100000000",
           "CHAT_UNPRICED_USD_PER_MTOK": "1"}


class Servers:
    """The mock upstream and one or more daphne processes, with their environment."""

    def __init__(self, workdir, database_url, redis_url="", asgi="bench.counting_asgi:application", patches=()):
        self.workdir = Path(workdir)
        self.patches = patches
        self.database_url, self.redis_url, self.asgi = database_url, redis_url, asgi
        self.mock = None
        self.mock_port = None
        self.daphnes = []  # (Popen, port)
        self.models = []
        # How daphne is started: chatsite's entry point (uvloop when installed); [DAPHNE] is plain asyncio.
        self.command = [PYTHON, "-m", "chatsite.serve"]
        # Its arguments for a port (bench/memory.py --server: another server's command line).
        self.arguments = lambda port: ["-b", "127.0.0.1", "-p", str(port), self.asgi]
        self.root = ROOT  # the checkout daphne runs (bench/memory.py --baseline: another one)
        self.extra_env = {}  # more variables for daphne (bench/memory.py: PYTHONTRACEMALLOC)

    def env(self, flush_ms=None):
        env = dict(os.environ, SECRET_KEY="bench", DATABASE_URL=self.database_url, MOCK_API_KEY="x",
                   CHAT_MODELS=",".join(self.models), MOCK_BASE_URL=f"http://127.0.0.1:{self.mock_port}/v1",
                   DJANGO_SETTINGS_MODULE="chatsite.settings", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                   CHAT_RATE_LIMIT="0",  # the bench sends many messages per session
                   # ...and all its sockets come from one address and a few sessions
                   CHAT_IP_RATE_LIMIT="0", CHAT_MAX_INFLIGHT_PER_PERSON="0", CHAT_MAX_INFLIGHT_PER_ADDRESS="0",
                   CHAT_MAX_SOCKETS_PER_PERSON="0", CHAT_MAX_SOCKETS_PER_ADDRESS="0")
        env.pop("REDIS_URL", None)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.patches:
            env["BENCH_PATCHES"] = ",".join(self.patches)
        if flush_ms is not None:
            env["CHAT_FLUSH_MS"] = str(flush_ms)
        env.update(BENCH_DIR=str(self.workdir), **self.extra_env)
        return env

    def log(self, name):
        return open(self.workdir / f"{name}.log", "ab")

    def start_mock(self, *options):
        """Start the mock upstream (50 ms to the first token unless a model name says otherwise)."""
        self.mock_port = free_port()
        self.mock = subprocess.Popen(
            [PYTHON, "bench/mock_server.py", "--port", str(self.mock_port), "--ttft-ms", "50", *options],
            cwd=ROOT, env=self.env(), stdout=self.log("mock"), stderr=subprocess.STDOUT,
        )
        wait_port(self.mock_port, self.mock)

    def migrate(self):
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env(),
                       check=True, stdout=self.log("migrate"), stderr=subprocess.STDOUT)

    def start_daphne(self, count=1, flush_ms=None, timeout=30):
        """Start `count` fresh daphne processes; return their ports."""
        self.stop_daphne()
        for i in range(count):
            port = free_port()
            proc = subprocess.Popen(
                [*self.command, *self.arguments(port)],
                cwd=self.root, env=self.env(flush_ms), stdout=self.log(f"daphne-{i}"), stderr=subprocess.STDOUT,
            )
            self.daphnes.append((proc, port))
        for proc, port in self.daphnes:
            wait_port(port, proc, timeout)
        return self.ports

    @property
    def ports(self):
        return [port for _, port in self.daphnes]

    @property
    def pids(self):
        return [proc.pid for proc, _ in self.daphnes]

    def stop_daphne(self):
        for proc, _ in self.daphnes:
            proc.terminate()
        for proc, _ in self.daphnes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.daphnes = []

    def stop(self):
        self.stop_daphne()
        if self.mock is not None:
            self.mock.terminate()
            self.mock.wait(10)
            self.mock = None


async def http(port, path, method="GET"):
    """Return the JSON body of a small request to 127.0.0.1:port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                 .encode())
    data = await reader.read(-1)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if not n:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return json.loads(body)


def count_rows(database_url, tables):
    """Return {table: rows} read straight from the database (sqlite or PostgreSQL)."""
    if database_url.startswith("sqlite:"):
        import sqlite3

        db = sqlite3.connect(database_url.split("sqlite:///", 1)[1])
        try:
            return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        finally:
            db.close()
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
