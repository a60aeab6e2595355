"""For tests that run servers in other processes: wait for what they do, and stop them for sure."""

import os
import socket
import subprocess
import time


def in_ci():
    """Return whether the suite runs in CI (where a missing browser or nginx fails rather than skips)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(read, timeout=20.0, what="a condition"):
    """Poll `read()` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop(process, timeout=15):
    """Stop a child process with SIGTERM, and kill it if it has not exited within `timeout` seconds.

    SIGTERM, not SIGINT: a shell that started the suite with SIGINT ignored passes that on to the child.
    """
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
