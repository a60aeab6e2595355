"""What an open websocket's task holds: the routing chain leaves only the coroutines that must wait
(the session middleware, the consumer, its receive), one scope, and no request headers once the
socket is open; and the chain's failures still surface in the application's task."""

import asyncio
import contextvars

import pytest
from asgiref.compatibility import is_double_callable
from channels.testing import ApplicationCommunicator, WebsocketCommunicator

from chat.consumers import ChatConsumer
from chat.middleware import SameOriginMiddleware
from chatsite.asgi import application
from chatsite.routing import ProtocolTypeRouter, URLRouter

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = [(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"user-agent", b"test " * 40)]


def await_chain(task):
    """The coroutines a task waits in, outermost first: (qualified name, frame locals)."""
    chain = []
    awaited = task.get_coro()
    while asyncio.iscoroutine(awaited):
        chain.append((awaited.cr_code.co_qualname, dict(awaited.cr_frame.f_locals)))
        awaited = awaited.cr_await
    return chain


def scopes_in(frames):
    return {id(value): value for _, local in frames for value in local.values()
            if isinstance(value, dict) and value.get("type") == "websocket"}


def consumer_in(frames):
    return next(local["self"] for name, local in frames if name == "ChatConsumer.__call__")


async def test_an_open_socket_waits_in_three_coroutines_holding_one_scope_without_headers(alice_session):
    headers = [*PAGE, (b"cookie", f"sessionid={alice_session}".encode())]
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    try:
        await asyncio.sleep(0)  # back in its receive
        frames = await_chain(ws.future)
        # No ProtocolTypeRouter, SameOriginMiddleware, URLRouter nor as_asgi coroutine in between.
        assert [name for name, _ in frames] == ["SessionAuthMiddleware.__call__", "ChatConsumer.__call__", "Queue.get"]
        consumer = consumer_in(frames)
        # The middleware keeps neither the server's scope nor its own copy; the consumer has the router's.
        assert list(scopes_in(frames).values()) == [consumer.scope]
        assert consumer.scope["session"].session_key == alice_session
        assert "_cache" not in vars(consumer.scope["session"])  # looked up when used (chat/session_store.py)
        assert consumer.scope["url_route"] == {"args": (), "kwargs": {}}
        assert consumer.scope["headers"] == ()  # dropped once connected
        assert len(ws.scope["headers"]) == len(headers)  # from the socket's own copy, not the server's list
        await ws.send_to(text_data="not json")  # it still answers
        assert (await ws.receive_json_from(5))["type"] == "error"
    finally:
        await ws.disconnect()


def context_vars():
    return dict(contextvars.copy_context())


@pytest.mark.parametrize("signed_in", [False, True])
async def test_an_open_sockets_context_keeps_nothing_its_database_calls_set(alice_session, signed_in, monkeypatch):
    """Loading the session and user (and a signed-in person's limits) runs in tasks of their own: the
    socket's task, which lives as long as the socket, keeps no asgiref Local (Django's cache object)
    nor asgiref's executor flag."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    cookie = f"sessionid={alice_session}"
    if signed_in:
        from asgiref.sync import sync_to_async

        def sign_in():
            client = Client()
            client.force_login(get_user_model().objects.create_user("carol", password="x" * 12))
            return f"sessionid={client.cookies['sessionid'].value}"

        cookie = await asyncio.create_task(sync_to_async(sign_in)())  # leaves this test's context as it was
    seen = []
    connect = ChatConsumer.connect

    async def watched(self):
        await connect(self)
        seen.append((context_vars(), self.scope["user"].is_authenticated))

    monkeypatch.setattr(ChatConsumer, "connect", watched)
    before = context_vars()
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=[*PAGE, (b"cookie", cookie.encode())])
    connected, _ = await ws.connect()
    assert connected
    try:
        async with asyncio.timeout(5):
            while not seen:  # connect goes on after the accept (a signed-in person's limits)
                await asyncio.sleep(0.01)
        [(names, authenticated)] = seen
        assert authenticated is signed_in
        changed = {var.name for var, value in names.items() if var not in before or before[var] is not value}
        assert changed == set(), [(var.name, getattr(value, "data", value)) for var, value in names.items() if var not in before or before[var] is not value]
    finally:
        await ws.disconnect()


async def test_the_routers_and_middlewares_are_single_callables():
    assert not is_double_callable(application)
    assert not is_double_callable(ChatConsumer.as_asgi())
    assert not is_double_callable(SameOriginMiddleware(None))
    assert not is_double_callable(URLRouter([]))
    assert ChatConsumer.as_asgi().consumer_class is ChatConsumer
    # as uvicorn tells an ASGI 3 application from an ASGI 2 one
    assert asyncio.iscoroutinefunction(application.__call__)
    assert asyncio.iscoroutinefunction(ChatConsumer.as_asgi())


async def test_a_route_that_is_not_there_fails_in_the_applications_task(alice_session):
    headers = [*PAGE, (b"cookie", f"sessionid={alice_session}".encode())]
    ws = WebsocketCommunicator(application, "/ws/nowhere/", headers=headers)
    with pytest.raises(ValueError, match="No route found"):
        await ws.connect()


async def test_a_scope_type_without_an_application_fails_in_the_applications_task():
    communicator = ApplicationCommunicator(application, {"type": "lifespan"})
    with pytest.raises(ValueError, match="No application configured for scope type 'lifespan'"):
        await communicator.wait(5)


async def test_an_exception_raised_building_the_chain_is_raised_in_the_task():
    def broken(scope, receive, send):
        raise RuntimeError("broken")

    router = ProtocolTypeRouter({"websocket": broken})
    awaitable = router(scope={"type": "websocket"}, receive=None, send=None)  # daphne passes keywords
    with pytest.raises(RuntimeError, match="broken"):
        await awaitable


async def test_a_socket_from_another_origin_is_still_refused(alice_session):
    headers = [(b"origin", b"http://evil.example"), (b"host", b"localhost"),
               (b"cookie", f"sessionid={alice_session}".encode())]
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, code = await ws.connect()
    assert not connected
