"""The websocket's Host and Origin checks: same scheme, host and port as the page, or a listed origin."""

import pytest
from channels.testing import WebsocketCommunicator

from chat.middleware import SameOriginMiddleware
from chatsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def opens(session_key, origin, host=b"localhost", scheme="ws", extra=()):
    """Return whether /ws/chat/ accepts a socket with these headers."""
    headers = [(b"origin", origin), (b"host", host), (b"cookie", f"sessionid={session_key}".encode()), *extra]
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    ws.scope["scheme"] = scheme
    connected, _ = await ws.connect()
    await ws.disconnect()
    return connected


async def test_it_accepts_the_pages_own_origin(alice_session):
    assert await opens(alice_session, b"http://localhost")
    assert await opens(alice_session, b"http://127.0.0.1:8000", host=b"127.0.0.1:8000")
    assert await opens(alice_session, b"https://localhost", scheme="wss")


async def test_it_refuses_another_scheme_port_or_host(alice_session):
    assert not await opens(alice_session, b"https://localhost")  # the socket came in over plain ws
    assert not await opens(alice_session, b"http://localhost:8001")
    assert not await opens(alice_session, b"http://127.0.0.1:8000", host=b"127.0.0.1:9000")
    assert not await opens(alice_session, b"http://evil.example")
    assert not await opens(alice_session, b"null")
    assert not await opens(alice_session, b"")


async def test_it_refuses_a_host_that_is_not_allowed_even_from_its_own_origin(alice_session):
    assert not await opens(alice_session, b"http://evil.example", host=b"evil.example")


async def test_it_takes_the_scheme_from_the_proxy_only_when_told(alice_session, settings):
    forwarded = [(b"x-forwarded-proto", b"https")]
    assert not await opens(alice_session, b"https://localhost", extra=forwarded)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await opens(alice_session, b"https://localhost", extra=forwarded)
    assert not await opens(alice_session, b"http://localhost", extra=forwarded)


def test_it_also_accepts_the_listed_origins(settings):
    settings.CHAT_ALLOWED_ORIGINS = ["https://app.example.com:8443"]
    middleware = SameOriginMiddleware(None)
    scope = {"type": "websocket", "scheme": "ws"}

    def allowed(origin):
        return middleware.allowed(dict(scope, headers=[(b"host", b"localhost"), (b"origin", origin)]))

    assert allowed(b"https://app.example.com:8443")
    assert not allowed(b"https://app.example.com")
    assert not allowed(b"http://app.example.com:8443")
