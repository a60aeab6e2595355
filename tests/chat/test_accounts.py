"""Accounts: sign in (any active user), sign up when allowed, sign out everywhere, login required when set."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient, Client
from django.utils import timezone

from billing.models import UsageRecord
from chat.models import Conversation
from chat.signouts import SIGNED_OUT
from chat.visitors import visitor_hash
from chatsite.asgi import application
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(transactional_db):
    return User.objects.create_user("alice", password="a good password 1")


def anonymous_with_history():
    """Return a client whose anonymous session owns a conversation and a usage record."""
    client = Client()
    client.get("/")
    assert client.post("/session/").status_code == 201
    visitor = visitor_hash(client.session.session_key)
    conversation = Conversation.objects.create(visitor=visitor, title="Before signing in")
    now = timezone.now()
    UsageRecord.objects.create(visitor=visitor, conversation=conversation, model="demo/assistant",
                               status="completed", started=now, finished=now)
    return client, conversation


def test_it_signs_in_any_active_user_on_a_page_in_the_sites_style(alice):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/chat/chat.css" in html and '<label for="id_username">' in html
    response = client.post("/login/", {"username": "alice", "password": "a good password 1"})
    assert response.status_code == 302 and response.url == "/"
    assert client.get("/").context["user"] == alice
    assert not alice.is_staff


def test_it_refuses_a_wrong_password_or_an_inactive_user(alice):
    response = Client().post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()
    alice.is_active = False
    alice.save()
    response = Client().post("/login/", {"username": "alice", "password": "a good password 1"})
    assert response.status_code == 200 and "_auth_user_id" not in response.wsgi_request.session


def test_it_gives_the_visitors_conversations_and_records_to_the_account_they_sign_in_to(alice):
    client, conversation = anonymous_with_history()
    bystander, theirs = anonymous_with_history()
    client.post("/login/", {"username": "alice", "password": "a good password 1"})
    conversation.refresh_from_db()
    assert conversation.user == alice and conversation.visitor == ""
    assert UsageRecord.objects.get(conversation=conversation).user == alice
    assert UsageRecord.objects.get(conversation=conversation).visitor == ""
    assert "Before signing in" in client.get("/").content.decode()
    theirs.refresh_from_db()
    assert theirs.user is None and theirs.visitor  # someone else's stays theirs
    assert client.get(f"/c/{conversation.pk}/").status_code == 200


def test_it_signs_up_only_when_allowed_and_keeps_the_visitors_conversations(settings):
    assert Client().get("/signup/").status_code == 404
    assert "Create one" not in Client().get("/login/").content.decode()
    settings.CHAT_ALLOW_SIGNUP = True
    client, conversation = anonymous_with_history()
    assert "Create one" in client.get("/login/").content.decode()
    response = client.post("/signup/", {"username": "dave", "password1": "a good password 2",
                                        "password2": "a good password 2"})
    assert response.status_code == 302 and response.url == "/"
    dave = User.objects.get(username="dave")
    conversation.refresh_from_db()
    assert conversation.user == dave and not dave.is_staff
    weak = Client().post("/signup/", {"username": "erin", "password1": "123", "password2": "123"})
    assert weak.status_code == 200 and not User.objects.filter(username="erin").exists()


def test_it_puts_the_page_and_the_endpoints_behind_login_when_required(settings, alice):
    settings.CHAT_REQUIRE_LOGIN = True
    client = Client()
    response = client.get("/?c=1")
    assert response.status_code == 302 and response.url == "/login/?next=/%3Fc%3D1"
    assert client.post("/session/").status_code == 403
    assert client.post("/c/1/rename/", {"title": "x"}).status_code == 403
    assert client.get("/login/").status_code == 200
    client.post("/login/", {"username": "alice", "password": "a good password 1"})
    assert client.get("/").status_code == 200


async def test_it_closes_an_anonymous_socket_with_4001_when_login_is_required(settings, alice_session):
    settings.CHAT_REQUIRE_LOGIN = True
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=[
        (b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", f"sessionid={alice_session}".encode())])
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_output(2)) == {"type": "websocket.close", "code": 4001}
    settings.CHAT_REQUIRE_LOGIN = False
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello"})
    assert (await receive_until_done(ws))[-1]["status"] == "completed"
    await ws.disconnect()


def signed_in_session(client, username, password):
    assert client.post("/login/", {"username": username, "password": password}).status_code == 302
    return client.session.session_key


async def test_it_closes_every_socket_of_a_person_who_signs_out(alice, bob_session):
    client = AsyncClient()
    key = await sync_to_async(signed_in_session)(Client(), "alice", "a good password 1")
    client.cookies["sessionid"] = key
    first, second, bob_ws = await connect(key), await connect(key), await connect(bob_session)
    await first.send_json_to({"type": "send", "content": "hello"})
    assert (await receive_until_done(first))[-1]["status"] == "completed"

    page = await client.get("/logout/")
    assert page.status_code == 200 and "Sign out" in page.content.decode()
    response = await client.post("/logout/")
    assert response.status_code == 302
    for ws in (first, second):
        assert (await ws.receive_output(5)) == {"type": "websocket.close", "code": SIGNED_OUT}
    # Someone else's socket stays open and usable; the signed-out browser comes back without a session.
    await bob_ws.send_json_to({"type": "send", "content": "still here"})
    assert (await receive_until_done(bob_ws))[-1]["status"] == "completed"
    await bob_ws.disconnect()
    again = WebsocketCommunicator(application, "/ws/chat/", headers=[
        (b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", f"sessionid={key}".encode())])
    assert (await again.connect())[0]
    assert (await again.receive_output(2)) == {"type": "websocket.close", "code": 4001}
