"""Run the live SIGTERM scenario N times on fresh daphne processes; print each exit code.

    .venv/bin/python scripts/sigterm_exits.py 50

The scenario of tests/live/test_resume_live.py::test_it_finishes_or_stores_every_reply_in_flight_on_sigterm
(a short reply that finishes, a long one cut): a daphne that crashes as it exits (SIGSEGV: -11) is
shown with the end of its log, where PYTHONFAULTHANDLER has printed the Python stack.
"""

import os
import pathlib
import sys
import tempfile
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from chat.mock_upstream import MockUpstream  # noqa: E402
from tests.live.client import Chat, new_session  # noqa: E402
from tests.live.conftest import MODELS, SETTINGS, SLOW  # noqa: E402
from tests.live.servers import Server, migrate, server_env  # noqa: E402
from tests.live.test_resume_live import LONG, deltas  # noqa: E402


def main(runs):
    """Start, load and SIGTERM a daphne `runs` times; return the exit codes."""
    mock = MockUpstream(ttft_ms=20, gap_ms=10, tokens=8)
    mock.start_in_thread()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sigterm-exits-"))
    env = server_env(f"sqlite:///{workdir / 'db.sqlite3'}", "", MODELS + [LONG], mock.base_url + "/v1", **SETTINGS)
    migrate(env)
    codes = []
    try:
        for run in range(runs):
            log = workdir / f"daphne-{run}.log"
            server = Server(env, log).start()
            session = new_session(server)
            short, long = Chat(server, session), Chat(server, session)
            short.send(type="send", content="finish me", model=SLOW)
            long.send(type="send", content="cut me", model=LONG)
            deltas(short, 2)
            deltas(long, 2)
            code = []
            stopper = threading.Thread(target=lambda: code.append(server.terminate(timeout=40)))
            stopper.start()
            short.until("done", timeout=30)
            long.until("done", timeout=30)
            stopper.join(45)
            codes.append(code[0] if code else None)
            print(run, codes[-1], flush=True)
            if codes[-1] != 0:
                print(log.read_text(errors="replace")[-4000:], flush=True)
    finally:
        mock.stop()
    print(f"{sum(c != 0 for c in codes)} of {len(codes)} exits failed: {codes}")
    return codes


if __name__ == "__main__":
    sys.exit(1 if any(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)) else 0)
