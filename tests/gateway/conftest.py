"""The API suite's world: a live daphne server with the mock upstream behind it, and its database.

The server runs in a subprocess on a free port with its own SQLite file; this process reads and
writes that same file through the ORM (`orm` fixture): keys are created and records checked where
the server keeps them.
"""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.live_orm import live_database
from tests.processes import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
FAST = "mock/gpt-4.1-mini"
ANTHROPIC = "mockanthropic/claude-haiku-4-5"
SLOW = "mock/slow+ttft=50+gap=40+tokens=200"
PRICEY = "mock/pricey+ttft=100+gap=5+tokens=50"
NO_USAGE = "mock/x+fault=no_usage"
FAILING = "mock/x+fault=500"
STALLING = "mock/x+fault=stall_first"
MODELS = [FAST, ANTHROPIC, SLOW, PRICEY, NO_USAGE, FAILING, STALLING]


def server_env(database, mock_base):
    """Return the live server's environment: the mock's two providers, fast retries, a short first-token timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHAT_", "DEBUG", "MOCK", "REDIS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings", SECRET_KEY="api-tests-secret-key",
        DATABASE_URL=f"sqlite:///{database}", CHAT_MODELS=",".join(MODELS),
        MOCK_BASE_URL=mock_base + "/v1", MOCK_API_KEY="test",
        MOCKANTHROPIC_BASE_URL=mock_base, MOCKANTHROPIC_API_KEY="test", MOCKANTHROPIC_API="anthropic",
        CHAT_RETRY_BACKOFF="0.01", CHAT_FIRST_TOKEN_TIMEOUT="3", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="package")
def database(tmp_path_factory):
    """Return a migrated SQLite file for the live server (and these tests) to share."""
    path = tmp_path_factory.mktemp("api") / "chatsite.sqlite3"
    env = server_env(path, "http://127.0.0.1:9")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    return path


@pytest.fixture(scope="package")
def api_server(mock_upstream, database, tmp_path_factory):
    """Run daphne (manage.py runserver) for the package; return its base URL."""
    url = f"http://127.0.0.1:{free_port()}"
    log_path = tmp_path_factory.mktemp("api-server") / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", url.split("//")[1]],
            cwd=ROOT, env=server_env(database, mock_upstream.base_url), stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(url, process, log_path)
        yield url
    finally:
        stop(process)


def wait_until_up(url, process, log_path, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the live server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=5)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the live server did not answer within {timeout} s:\n{log_path.read_text()}")


def pytest_collection_modifyitems(items):
    """Mark the tests that read the live server's SQLite file through this process's ORM."""
    for item in items:
        if "orm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sqlite_live)


@pytest.fixture(scope="module")
def orm(database, django_db_blocker):
    """Point this process's ORM at the live server's database for the module, with prices for the mock models."""
    prices = {FAST: ("0.40", "1.60"), ANTHROPIC: ("1.00", "5.00"), SLOW: ("0.40", "1.60"),
              PRICEY: ("20", "20"), NO_USAGE: ("0.40", "1.60")}
    with live_database(database, django_db_blocker, prices):
        yield


@pytest.fixture
def api(api_server, orm, mock_upstream):
    """The live endpoint, with the mock upstream idle and its counters reset."""
    mock_upstream.wait_idle(10)
    mock_upstream.reset()
    return api_server


@pytest.fixture
def make_key(orm):
    """Return a function that creates an API key and returns its raw form."""
    from gateway.models import ApiKey

    def make(name=None, **fields):
        _, raw = ApiKey.objects.create_key(name or f"key-{time.monotonic_ns()}", **fields)
        return raw

    return make


def client(api_url, key, **options):
    """Return an openai SDK client for the live endpoint (no SDK retries: each call is one request)."""
    from openai import OpenAI

    return OpenAI(base_url=api_url + "/v1", api_key=key, max_retries=0, timeout=30, **options)
