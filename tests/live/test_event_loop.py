"""The served process runs on uvloop (python -m chatsite.serve), and on asyncio where uvloop is missing."""

import subprocess
import sys

from tests.live.client import Chat, new_session
from tests.live.conftest import FAST
from tests.live.servers import ROOT


def test_it_serves_a_chat_on_uvloop(one_process):
    server = one_process.servers[0]
    with open(f"/proc/{server.process.pid}/maps") as maps:
        assert "uvloop/loop." in maps.read()  # the extension module is loaded in the serving process
    chat = Chat(server, new_session(server))
    try:
        chat.send(type="send", content="on uvloop", model=FAST)
        frames = chat.until("done")
    finally:
        chat.close()
    assert frames[-1]["status"] == "completed"
    assert "".join(f["text"] for f in frames if f["type"] == "delta")


def loop_in_a_fresh_process(prelude=""):
    code = prelude + (
        "import asyncio\nfrom chatsite.loop import install_loop_policy\n"
        "name = install_loop_policy()\nprint(name, type(asyncio.new_event_loop()).__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_it_installs_the_uvloop_policy():
    assert loop_in_a_fresh_process() == ["uvloop", "uvloop"]


def test_it_falls_back_to_asyncio_without_uvloop():
    blocked = "import sys\nsys.modules['uvloop'] = None  # importing it now raises ImportError\n"
    assert loop_in_a_fresh_process(blocked) == ["asyncio", "asyncio.unix_events"]


def test_daphne_closes_its_upstream_client_when_it_stops(upstream, tmp_path):
    """SIGTERM: the replies drain, then the shared client closes its aiohttp session and connections
    before the loop stops (no "Unclosed client session" / "Unclosed connector" at exit)."""
    from tests.live.conftest import MODELS, SETTINGS
    from tests.live.servers import Server, migrate, server_env

    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", "", MODELS, upstream.base_url + "/v1", **SETTINGS)
    env["LOG_LEVEL"] = "INFO"
    migrate(env)
    server = Server(env, tmp_path / "daphne.log").start()
    try:
        chat = Chat(server, new_session(server))
        try:
            chat.send(type="send", content="then stop", model=FAST)
            assert chat.until("done")[-1]["status"] == "completed"
        finally:
            chat.close()
    finally:
        code = server.terminate()
    log = server.log()
    assert code == 0, log
    assert "shutting down: the upstream client is closed" in log
    assert "Unclosed" not in log
