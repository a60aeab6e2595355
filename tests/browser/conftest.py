"""The browser suite's world: Debian's chromium, the mock upstream, and a live daphne server.

The server runs in a subprocess on a free port with its own SQLite file; this process reads that
same file through the ORM (`orm` fixture), so the tests check outcomes where they are stored.
"""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.live_orm import live_database
from tests.processes import free_port, in_ci, stop

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
FAST = "mock/gpt-4.1-mini"
SLOW = "mock/slow+ttft=100+gap=50+tokens=160"
MARKDOWN = "mock/x+reply=markdown+gap=40"
XSS = "mock/x+reply=xss+gap=0"  # no gap: whole tags arrive inside one frame
HOSTILE = "mock/x+reply=hostile+gap=25"  # tags and links split over many frames while it streams
XSS_STREAMED = "mock/x+reply=xss+gap=80"  # slow enough to be watched streaming on a loaded machine
FAULT = "mock/x+fault=400"
RESUME = "mock/resume+ttft=50+gap=25+tokens=120"  # three seconds of reply: long enough to reload in
LONG = "mock/long+ttft=50+gap=25+tokens=400"  # outlasts the grace period
PONDERING = "mock/x+ttft=1500+gap=10+tokens=20"  # a long wait for the first token
MODELS = [FAST, SLOW, MARKDOWN, XSS, FAULT, RESUME, LONG, HOSTILE, XSS_STREAMED, PONDERING]
GRACE_S = 4  # CHAT_RESUME_GRACE_S of the live server: outlasts a two-second outage, short for the suite
TIMEOUT_MS = 30_000  # the machine is shared and slow: wait generously, assert on outcomes
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="package")
def chromium():
    """Return the browser's path, installing it with scripts/install-browser if needed."""
    result = subprocess.run([str(ROOT / "scripts" / "install-browser")], capture_output=True, text=True)
    if result.returncode != 0 or not Path(CHROMIUM).exists():
        message = f"chromium is not available: {result.stderr.strip() or result.stdout.strip()}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="package")
def mock():
    """Run the mock upstream in a thread for the whole suite."""
    from chat.mock_upstream import MockUpstream

    upstream = MockUpstream(ttft_ms=50, gap_ms=10, tokens=20)
    upstream.start_in_thread()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="package")
def database(tmp_path_factory):
    """Return a migrated SQLite file for the live server (and these tests) to share."""
    path = tmp_path_factory.mktemp("browser") / "chatsite.sqlite3"
    env = server_env(path, "http://127.0.0.1:9/v1")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    return path


def server_env(database, mock_base):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHAT_", "DEBUG", "MOCK_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        SECRET_KEY="browser-tests-secret-key",
        DATABASE_URL=f"sqlite:///{database}",
        CHAT_MODELS=",".join(MODELS),
        MOCK_BASE_URL=mock_base,
        MOCK_API_KEY="test",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        CHAT_RESUME_GRACE_S=str(GRACE_S),
        # Every page is 127.0.0.1, and test_resume shares Redis db 14 with other runs: no per-address limits.
        CHAT_IP_RATE_LIMIT="0", CHAT_MAX_INFLIGHT_PER_ADDRESS="0", CHAT_MAX_SOCKETS_PER_ADDRESS="0",
    )
    return env


class LiveServer:
    """daphne (manage.py runserver, serving static files) in a subprocess on a fixed free port."""

    def __init__(self, env, log_path):
        self.env, self.log_path = env, log_path
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = None

    def start(self):
        """Start the server and wait until it answers."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", "--noreload", "--insecure", self.url.split("//")[1]],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until_up(self.url, self.process, self.log_path)

    def stop(self):
        """Stop the server (its open websockets drop)."""
        stop(self.process)


@pytest.fixture(scope="package")
def chat_server(chromium, mock, database, tmp_path_factory):
    """Run the live server for the suite; return it (its `url`, and `stop()`/`start()` for outages)."""
    server = LiveServer(server_env(database, mock.base_url + "/v1"), tmp_path_factory.mktemp("server") / "server.log")
    server.start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


def wait_until_up(url, server, log_path, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the live server exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/static/chat/chat.js", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the live server did not answer within {timeout} s:\n{log_path.read_text()}")


@pytest.fixture(scope="package")
def orm(database, django_db_blocker):
    """Point this process's ORM at the live server's database for the suite, with a few prices."""
    prices = {model: ("0.40", "1.60") for model in (FAST, SLOW, MARKDOWN, RESUME)}
    with live_database(database, django_db_blocker, prices):
        yield


@pytest.fixture(scope="package")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def context(browser):
    """A fresh browser context: a visitor with no cookies (a new session)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context, chat_server, orm, mock):
    """The chat page, loaded and connected; records any dialog or script error it raises."""
    tab = watched(context.new_page())
    open_chat(tab, chat_server.url)
    mock.wait_idle(10)
    mock.reset()
    yield tab
    assert_clean(tab)


def watched(tab):
    """Record the dialogs, script errors and Content-Security-Policy violations `tab` raises."""
    tab.dialogs, tab.errors, tab.csp_violations = [], [], []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.on("console", lambda message: "Content Security Policy" in message.text
           and tab.csp_violations.append(message.text))
    return tab


def assert_clean(tab):
    """Fail if `tab` raised a script error or broke the Content-Security-Policy."""
    assert tab.errors == [], f"script errors on the page: {tab.errors}"
    assert tab.csp_violations == [], f"Content-Security-Policy violations: {tab.csp_violations}"


def open_chat(tab, url):
    """Load the page at `url` and wait until it can send: its websocket open, or (a new visitor, who gets
    a session with their first message) ready to open one."""
    tab.goto(url)
    tab.wait_for_selector('#connection[data-state="open"], #connection[data-state="idle"]')
    return tab


def send(tab, text, model=FAST, stream=True):
    """Pick `model` and streaming on or off, type `text` and press Enter."""
    tab.select_option("#model", model)
    tab.locator("#stream").set_checked(stream)
    tab.fill("#prompt", text)
    tab.press("#prompt", "Enter")


def last_reply(tab):
    return tab.locator(".message.assistant").last


def wait_for_reply(tab, status="completed"):
    """Wait until the last reply ends with `status`; return its locator."""
    reply = last_reply(tab)
    expect(reply).to_have_attribute("data-status", status, timeout=TIMEOUT_MS)
    return reply
