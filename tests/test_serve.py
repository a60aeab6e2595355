"""`python -m chatsite.serve`: the garbage collector is tuned once the application is loaded."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs chatsite.serve's main() as `python -m chatsite.serve` would, with daphne's Server.run replaced by
# a report of the collector's state at the moment daphne would start serving.
PROBE = """
import gc, json, os, sys
os.environ.setdefault("SECRET_KEY", "test")
from chatsite.loop import install_loop_policy
install_loop_policy()
import daphne.server

def report(server):
    from chatsite import asgi
    app = asgi.application
    print(json.dumps({
        "threshold": gc.get_threshold(),
        "frozen": gc.get_freeze_count(),
        "app_tracked": gc.is_tracked(app),
        "app_frozen": not any(o is app for o in gc.get_objects()),
        "served": type(server.application).__name__,
    }))

daphne.server.Server.run = report
sys.argv = ["chatsite.serve", "-b", "127.0.0.1", "-p", "0", "chatsite.asgi:application"]
from chatsite import serve
serve.main()
"""


def run_probe():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_freezes_what_start_up_built_and_raises_the_young_threshold():
    from chatsite.serve import GC_THRESHOLD

    state = run_probe()
    assert state["threshold"] == list(GC_THRESHOLD)
    assert GC_THRESHOLD[0] > 700  # Python's default, which the tuning exists to raise
    # The application itself was loaded before the freeze, so the collector no longer walks it.
    assert state["app_tracked"] and state["app_frozen"]
    assert state["frozen"] > 10_000
    assert state["served"]  # daphne was handed the application
