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
