"""A chat client over a real websocket (the `websockets` library), as a script would talk to the server."""

import json
import time
import urllib.request

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def cookies_of(response):
    """Return the cookies a response set, by name."""
    found = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        found[name] = rest.split(";", 1)[0]
    return found


def new_session(server):
    """Load the chat page, then ask for a session as its first send does; return the `sessionid` cookie."""
    with urllib.request.urlopen(server.url + "/", timeout=20) as response:
        token = cookies_of(response)["csrftoken"]
    request = urllib.request.Request(
        server.url + "/session/", method="POST", headers={"Cookie": f"csrftoken={token}", "X-CSRFToken": token}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        session = cookies_of(response).get("sessionid")
    assert session, "POST /session/ set no sessionid cookie"
    return session


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
