"""A chat client over a real websocket (the `websockets` library), as a script would talk to the server."""

import json
import time
import urllib.request

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def new_session(server):
    """GET the chat page; return the `sessionid` cookie it set."""
    with urllib.request.urlopen(server.url + "/", timeout=20) as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            if header.startswith("sessionid="):
                return header.split("=", 1)[1].split(";", 1)[0]
    raise AssertionError("the page set no sessionid cookie")


class Chat:
    """One socket to /ws/chat/ of `server`, as the person with `session`."""

    def __init__(self, server, session):
        self.session = session
        self.ws = connect(
            server.ws_url, origin=server.url, additional_headers={"Cookie": f"sessionid={session}"},
            open_timeout=20, max_size=None,
        )

    def send(self, **frame):
        self.ws.send(json.dumps(frame))

    def receive(self, timeout=10):
        """Return the next frame, or None if none came within `timeout` seconds."""
        try:
            return json.loads(self.ws.recv(timeout))
        except TimeoutError:
            return None

    def until(self, kind, timeout=15):
        """Return every frame up to and including the first of type `kind`."""
        frames, deadline = [], time.monotonic() + timeout
        while True:
            frame = self.receive(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise AssertionError(f"no {kind!r} within {timeout} s; got {frames}")
            frames.append(frame)
            if frame["type"] == kind:
                return frames

    def quiet(self, seconds=0.3):
        """Return the frames that arrive within `seconds` (to prove none did)."""
        frames, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            frame = self.receive(left)
            if frame is not None:
                frames.append(frame)
        return frames

    def close(self):
        try:
            self.ws.close()
        except ConnectionClosed:
            pass
