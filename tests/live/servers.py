"""Real server processes for the live suites: daphne subprocesses on a shared database and layer.

`Deployment` is one or two `daphne` processes with the same environment: SQLite and the in-memory
layer for one, or PostgreSQL and Redis for two (as in production). `Store` reads what they wrote
with a plain database connection, so the tests check outcomes where they are stored.
"""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.processes import free_port, in_ci

ROOT = Path(__file__).resolve().parents[2]
DAPHNE = [sys.executable, "-m", "chatsite.serve"]  # daphne on uvloop, as served in production


def services_or_skip(postgres_url, redis_url):
    """Check PostgreSQL and Redis answer; skip when they do not (fail under CI)."""
    import psycopg
    import redis

    try:
        psycopg.connect(postgres_url, connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except (psycopg.Error, redis.RedisError) as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL ({postgres_url}) or Redis ({redis_url}) cannot be reached in CI: {exc}")
        pytest.skip(f"PostgreSQL or Redis is not running here: {exc}")


def live_postgres():
    """Return (admin URL, URL of a database of our own) on the PostgreSQL of DATABASE_URL (or the local one)."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        base = "postgres://postgres@127.0.0.1:5432/chatsite"
    parts = urllib.parse.urlsplit(base)
    name = f"{parts.path.lstrip('/') or 'chatsite'}_live_{os.getpid()}"  # runs at once must not share it
    return parts._replace(path="/postgres").geturl(), parts._replace(path=f"/{name}").geturl(), name


def live_redis():
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"


class Server:
    """One daphne process on a free port."""

    def __init__(self, env, log_path, application="chatsite.asgi:application"):
        self.env, self.log_path, self.application = env, log_path, application
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/chat/"
        self.process = None

    def start(self):
        """Start daphne and wait until it serves the page's script."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*DAPHNE, "-b", "127.0.0.1", "-p", str(self.port), self.application],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"daphne exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/static/chat/chat.js", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"daphne did not answer within 90 s:\n{self.log_path.read_text()}")

    def terminate(self, timeout=30):
        """Send SIGTERM and wait for the process to exit; return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process and self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            pytest.fail(f"daphne did not exit within {timeout} s of SIGTERM:\n{self.log_path.read_text()}")

    def log(self):
        return self.log_path.read_text(errors="replace")


NO_ADDRESS_LIMITS = {"CHAT_IP_RATE_LIMIT": 0, "CHAT_MAX_INFLIGHT_PER_ADDRESS": 0, "CHAT_MAX_SOCKETS_PER_ADDRESS": 0}


def server_env(database_url, redis_url, models, mock_base, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "CHAT_", "DEBUG", "MOCK_", "REDIS_URL", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings", SECRET_KEY="live-tests-secret-key", DATABASE_URL=database_url,
        CHAT_MODELS=",".join(models), MOCK_BASE_URL=mock_base, MOCK_API_KEY="test", LOG_LEVEL=os.environ.get("LIVE_LOG_LEVEL", "WARNING"),
        PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1",
        # Every live client is 127.0.0.1 (and with Redis, db 14 is shared by every run): per-address
        # limits are off unless a test sets them (tests/live/test_budget.py does).
        **{k: str(v) for k, v in {**NO_ADDRESS_LIMITS, **extra}.items()},
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def migrate(env):
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)


class Store:
    """Reads the live servers' database: messages and usage records."""

    def __init__(self, database_url):
        self.database_url = database_url

    def query(self, sql, params=()):
        if self.database_url.startswith("sqlite"):
            connection = sqlite3.connect(self.database_url.removeprefix("sqlite:///"), timeout=20)
            try:
                return connection.execute(sql.replace("%s", "?"), params).fetchall()
            finally:
                connection.close()
        import psycopg

        with psycopg.connect(self.database_url) as connection:
            return connection.execute(sql, params).fetchall()

    def records(self, message_id):
        """Return the usage records of reply `message_id` as (status, completion_tokens) rows."""
        return self.query(
            "SELECT status, completion_tokens FROM billing_usagerecord WHERE message_id = %s", (message_id,)
        )

    def abandonment(self, message_id):
        """Return (reason, phase, tokens_delivered, elapsed_ms) of the reply's abandonment event, or None."""
        rows = self.query(
            "SELECT a.reason, a.phase, a.tokens_delivered, a.elapsed_ms FROM billing_abandonmentevent a "
            "JOIN billing_usagerecord r ON a.record_id = r.id WHERE r.message_id = %s", (message_id,)
        )
        return rows[0] if rows else None

    def message(self, message_id):
        """Return (status, content) of a stored message."""
        rows = self.query("SELECT status, content FROM chat_message WHERE id = %s", (message_id,))
        return rows[0] if rows else None

    def wait_record(self, message_id, timeout=20):
        """Wait until reply `message_id` has a usage record; return its records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.records(message_id)
            if rows:
                return rows
            time.sleep(0.05)
        raise AssertionError(f"no usage record for message {message_id} after {timeout} s")


class Deployment:
    """One or more daphne processes sharing a database (and, with Redis, a channel layer)."""

    def __init__(self, servers, store):
        self.servers, self.store = servers, store

    def stop(self):
        for server in self.servers:
            server.terminate()


@contextlib.contextmanager
def production(upstream, workdir, suffix="", models=(), **settings):
    """Yield two daphnes on a PostgreSQL database of their own and Redis (production), dropped after."""
    import psycopg

    admin_url, database_url, name = live_postgres()
    database_url, name = database_url.replace(name, name + suffix), name + suffix
    redis_url = live_redis()
    services_or_skip(admin_url, redis_url)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    env = server_env(database_url, redis_url, models, upstream.base_url + "/v1", **settings)
    migrate(env)
    deployment = Deployment([Server(env, workdir / f"daphne-{n}.log").start() for n in (1, 2)], Store(database_url))
    try:
        yield deployment
    finally:
        deployment.stop()
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
