"""The served daphne (python -m chatsite.serve, chatsite.lean_daphne) keeps no handshake state for an
open websocket: not twisted's upgrade request, its headers and channel, not autobahn's parsed request,
no asyncio.Queue per application; and the sockets work as before (replies, close, size limit)."""

import json
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

from tests.live.client import Chat, new_session
from tests.live.conftest import FAST, MODELS, SETTINGS
from tests.live.servers import Server, migrate, server_env

SOCKETS = 6


def inspected_server(upstream, tmp_path, **environ):
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", "", MODELS, upstream.base_url + "/v1", **SETTINGS)
    env.update(environ)
    migrate(env)
    return Server(env, tmp_path / "daphne.log", application="tests.live.inspect_asgi:application").start()


@pytest.fixture
def inspected(upstream, tmp_path):
    server = inspected_server(upstream, tmp_path)
    yield server
    server.terminate()


@pytest.fixture
def inspected_without_collector(upstream, tmp_path):
    """The served process with its garbage collector off: what is not freed at once stays, and is counted."""
    server = inspected_server(upstream, tmp_path, INSPECT_GC="off")
    yield server
    server.terminate()


def inspect(server):
    with urllib.request.urlopen(server.url + "/__inspect__", timeout=20) as response:
        return json.loads(response.read())


def settled(server, timeout=10):
    """What the process holds once daphne has reaped the finished HTTP requests (it does each second):
    at most the inspecting request's own."""
    deadline = time.monotonic() + timeout
    while True:
        held = inspect(server)
        if held["counts"]["daphne.http_protocol.WebRequest"] <= 1 or time.monotonic() > deadline:
            return held
        time.sleep(0.3)


def test_an_open_websocket_keeps_no_handshake_state(inspected):
    from autobahn.websocket.protocol import WebSocketServerProtocol

    from chatsite.lean_daphne import HANDSHAKE_ONLY

    chats = [Chat(inspected, new_session(inspected)) for _ in range(SOCKETS)]
    try:
        for chat in chats:
            chat.send(type="send", content="held", model=FAST)
        for chat in chats:
            assert chat.until("done")[-1]["status"] == "completed"
            # compression is declined, as daphne's factory does (a function option, not bound to the protocol)
            assert chat.ws.response.headers.get("Sec-WebSocket-Extensions") is None
        time.sleep(2.5)  # daphne forgets finished requests each second
        # not even as cyclic garbage waiting for a collection (the upgrade request and its channel)
        assert inspect(inspected)["uncollected"]["daphne.http_protocol.WebRequest"] <= SOCKETS // 2
        held = settled(inspected)
        counts = held["counts"]
        assert counts["daphne.http_protocol.WebRequest"] <= 1  # the /__inspect__ request itself
        assert counts["twisted.web.http.HTTPChannel"] <= 1
        assert counts["twisted.web.http_headers.Headers"] <= 2  # its request's and response's
        assert counts["asyncio.queues.Queue"] == 0
        assert counts["chatsite.lean_daphne.InputQueue"] >= SOCKETS
        assert len(held["sockets"]) == SOCKETS
        for socket in held["sockets"]:
            kept = set(socket["attributes"])
            assert not kept & set(HANDSHAKE_ONLY), kept & set(HANDSHAKE_ONLY)
            assert not kept & set(WebSocketServerProtocol.CONFIG_ATTRS)  # on the class, not copied per socket
            assert "clean_headers" not in kept and "application_deferred" not in kept
            assert (socket["request"], socket["path"]) == ("HandshakeRequest", "/ws/chat/")
            assert socket["producer"] == "NoneType" and socket["queue"] == "InputQueue"
            assert socket["transport"] == "WriteThroughServer"  # frames leave at once (test_lean_daphne.py)
            assert "send_queue" not in kept  # autobahn's deque, made only when a write must queue
            # The routers returned their inner application's awaitable (chatsite/routing.py): the task
            # waits in the session middleware, the consumer and its receive, and holds one scope, the
            # consumer's, without the request's headers.
            assert socket["awaiting"] == ["SessionAuthMiddleware.__call__", "ChatConsumer.__call__",
                                          "InputQueue.get"], socket["awaiting"]
            assert (socket["scopes"], socket["scope_headers"]) == (1, 0)
        for chat in chats:  # the open sockets still carry a second reply
            chat.send(type="send", content="again", model=FAST)
            assert chat.until("done")[-1]["status"] == "completed"
    finally:
        for chat in chats:
            chat.close()
    deadline = time.monotonic() + 10
    while inspected.log().count('"WSDISCONNECT /ws/chat/"') < SOCKETS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert inspected.log().count('"WSDISCONNECT /ws/chat/"') == SOCKETS  # daphne's log still names the path
    assert "Traceback" not in inspected.log()


def test_the_protocol_options_apply_a_message_over_the_size_limit_closes_the_socket(inspected):
    """daphne's --websocket_max_message_size (1 MiB by default) reaches the protocol through its class."""
    chat = Chat(inspected, new_session(inspected))
    try:
        chat.ws.send("x" * (1024 * 1024 - 16))  # within the limit: not JSON, an error frame, the socket stays
        assert chat.until("error")[-1]["type"] == "error"
        chat.ws.send("x" * (1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed):
            chat.ws.recv(10)
    finally:
        chat.close()


def test_a_closed_websocket_is_freed_at_once_not_left_to_the_collector(inspected_without_collector):
    """autobahn resolves `is_closed` with the protocol itself; without that cycle broken, every closed
    socket's protocol and transport (and what they hold) waited for a collection."""
    server = inspected_without_collector
    chats = [Chat(server, new_session(server)) for _ in range(SOCKETS)]
    for chat in chats:
        chat.send(type="send", content="held", model=FAST)
    for chat in chats:
        assert chat.until("done")[-1]["status"] == "completed"
    assert inspect(server)["uncollected"]["chatsite.lean_daphne.WebSocketProtocol"] == SOCKETS
    for chat in chats:
        chat.close()
    deadline = time.monotonic() + 10
    while server.log().count('"WSDISCONNECT /ws/chat/"') < SOCKETS and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)  # daphne forgets a closed socket's application once its task has ended (each second)
    uncollected = inspect(server)["uncollected"]
    assert uncollected["chatsite.lean_daphne.WebSocketProtocol"] == 0, uncollected
    assert uncollected["chatsite.lean_daphne.WriteThroughServer"] <= 1, uncollected  # the inspecting request's
