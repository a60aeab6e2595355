import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import UsageRecord
from chat.models import Conversation, Message
from chat.visitors import visitor_hash

pytestmark = pytest.mark.django_db


def visitor():
    """Return a test client that has loaded the page and asked for a session, as its first send does."""
    client = Client()
    assert client.get("/").status_code == 200
    assert client.post("/session/").status_code == 201
    return client


def conversation_of(client, title="A chat", **fields):
    return Conversation.objects.create(visitor=visitor_hash(client.session.session_key), title=title, **fields)


@pytest.fixture
def alice_client():
    return visitor()


@pytest.fixture
def bob_client():
    return visitor()


def test_it_renders_the_page_for_an_anonymous_visitor(client, settings):
    settings.CHAT_MODELS = ["demo/assistant", "openai/gpt-4.1-mini"]
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<option value="demo/assistant" selected>' in page
    assert '<option value="openai/gpt-4.1-mini">' in page
    assert 'aria-live="polite"' in page
    assert '<label for="prompt"' in page
    assert "/static/chat/chat.js" in page


def test_it_makes_no_session_for_a_visitor_who_only_looks(client):
    for _ in range(20):
        response = Client().get("/")
        assert response.status_code == 200 and "sessionid" not in response.cookies
        assert 'data-session-url="/session/"' in response.content.decode()
    assert Session.objects.count() == 0


def test_it_creates_the_session_once_when_asked(client):
    client.get("/")
    with CaptureQueriesContext(connection) as first:
        response = client.post("/session/")
    assert response.status_code == 201 and "sessionid" in response.cookies
    assert Session.objects.count() == 1
    inserts = [q for q in first.captured_queries if q["sql"].startswith("INSERT")]
    updates = [q for q in first.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(inserts) == 1 and not updates  # created once, not created then saved again
    key = response.cookies["sessionid"].value
    with CaptureQueriesContext(connection) as second:
        again = client.post("/session/")
        page = client.get("/")
    assert again.status_code == 200 and "sessionid" not in again.cookies
    assert 'data-session-url=""' in page.content.decode()
    assert Session.objects.get().session_key == key
    assert not [q for q in second.captured_queries if not q["sql"].startswith("SELECT")]


def test_it_makes_a_new_session_with_one_insert_and_no_lookup_first(client):
    from django.core.cache import cache

    from chat.sessions import CLEAR_KEY

    cache.add(CLEAR_KEY, 1)  # the hourly sweep of expired sessions is another test's
    with CaptureQueriesContext(connection) as made:
        assert client.post("/session/").status_code == 201
    sessions = [q["sql"] for q in made.captured_queries if "django_session" in q["sql"]]
    assert len(sessions) == 1 and sessions[0].startswith("INSERT"), sessions


def test_it_draws_another_session_key_when_the_first_is_taken(client, monkeypatch):
    from chat import session_store

    taken = session_store.SessionStore()
    taken["who"] = "someone else"
    taken.create()
    keys = iter([taken.session_key, "a" * 32])
    monkeypatch.setattr(session_store, "random_string", lambda length, chars: next(keys))
    response = client.post("/session/")
    assert response.status_code == 201 and response.cookies["sessionid"].value == "a" * 32
    assert session_store.SessionStore(taken.session_key).load() == {"who": "someone else"}
    assert Session.objects.count() == 2


def test_it_clears_expired_sessions_when_it_makes_a_new_one_at_most_hourly(client):
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.cache import cache

    from chat.sessions import CLEAR_KEY

    cache.delete(CLEAR_KEY)
    old = SessionStore()
    old.set_expiry(-60)
    old.create()
    assert Session.objects.count() == 1
    assert Client().post("/session/").status_code == 201
    assert Session.objects.filter(session_key=old.session_key).count() == 0
    again = SessionStore()
    again.set_expiry(-60)
    again.create()
    assert Client().post("/session/").status_code == 201
    assert Session.objects.filter(session_key=again.session_key).exists()  # not within the hour
    cache.delete(CLEAR_KEY)


def test_it_needs_csrf_to_make_a_session():
    client = Client(enforce_csrf_checks=True)
    assert client.post("/session/").status_code == 403
    assert Session.objects.count() == 0


def test_it_lists_only_the_visitors_own_conversations(alice_client, bob_client):
    conversation_of(alice_client, "Alice's plans")
    conversation_of(bob_client, "Bob's secrets")
    page = alice_client.get("/").content.decode()
    assert "Alice&#x27;s plans" in page
    assert "Bob" not in page


def test_it_lists_a_signed_in_users_conversations(client):
    carol = User.objects.create_user("carol", password="pw")
    Conversation.objects.create(user=carol, title="Carol's chat")
    client.force_login(carol)
    assert "Carol&#x27;s chat" in client.get("/").content.decode()


def test_it_renders_a_stored_conversation(alice_client):
    chat = conversation_of(alice_client, "Markdown", model="demo/assistant")
    Message.objects.create(conversation=chat, role="user", content="<b>hi</b> there")
    reply = Message.objects.create(conversation=chat, role="assistant", content="# Title\n\n<img src=x onerror=alert(1)>")
    now = timezone.now()
    UsageRecord.objects.create(
        conversation=chat, message=reply, model="demo/assistant", status="completed", prompt_tokens=12,
        completion_tokens=7, cost_usd=Decimal("0.0000156000"), ttft_ms=230, duration_ms=930, started=now, finished=now,
    )
    for url in (f"/c/{chat.pk}/", f"/?c={chat.pk}"):
        page = alice_client.get(url).content.decode()
        assert "&lt;b&gt;hi&lt;/b&gt; there" in page
        assert "<h1>Title</h1>" in page
        assert "<img" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "230 ms" in page and "12 in · 7 out" in page and "$0.0000156" in page and "10.0 tok/s" in page
        assert 'aria-current="page"' in page


def test_it_shows_a_stopped_reply_as_stopped_and_one_in_flight_as_streaming(alice_client):
    chat = conversation_of(alice_client)
    Message.objects.create(conversation=chat, role="user", content="and again")
    Message.objects.create(conversation=chat, role="assistant", content="Half a rep", status="stopped")
    Message.objects.create(conversation=chat, role="user", content="go on")
    streaming = Message.objects.create(conversation=chat, role="assistant", content="", status="streaming")
    response = alice_client.get(f"/c/{chat.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('class="mark stopped"') == 1
    assert "<p>Half a rep</p>" in page
    # The page resumes a reply still in flight (chat.js): it is shown streaming, not stopped.
    assert f'data-id="{streaming.pk}" data-status="streaming"' in page
    assert '<div class="content markdown streaming"></div>' in page


def test_it_keeps_the_page_get_to_a_few_queries(alice_client):
    chat = conversation_of(alice_client)
    for i in range(5):
        Message.objects.create(conversation=chat, role="user", content=f"q{i}")
        Message.objects.create(conversation=chat, role="assistant", content=f"a{i}")
    with CaptureQueriesContext(connection) as queries:
        alice_client.get(f"/c/{chat.pk}/")
    assert len(queries) <= 3  # the list, the messages, their usage records


def test_it_hides_someone_elses_conversation(alice_client, bob_client):
    theirs = conversation_of(bob_client, "Bob's secrets")
    assert alice_client.get(f"/c/{theirs.pk}/").status_code == 404
    assert alice_client.get(f"/?c={theirs.pk}").status_code == 404
    assert Client().get(f"/c/{theirs.pk}/").status_code == 404


def test_it_renames_for_the_owner(alice_client):
    chat = conversation_of(alice_client, "Old")
    response = alice_client.post(f"/c/{chat.pk}/rename/", json.dumps({"title": "  New\n  name "}),
                          content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"id": chat.pk, "title": "New name"}
    chat.refresh_from_db()
    assert chat.title == "New name"


def test_it_renames_from_a_form(alice_client):
    chat = conversation_of(alice_client, "Old")
    assert alice_client.post(f"/c/{chat.pk}/rename/", {"title": "Formed"}).status_code == 200
    chat.refresh_from_db()
    assert chat.title == "Formed"


def test_it_refuses_an_empty_title(alice_client):
    chat = conversation_of(alice_client, "Old")
    response = alice_client.post(f"/c/{chat.pk}/rename/", {"title": "   "})
    assert response.status_code == 400
    chat.refresh_from_db()
    assert chat.title == "Old"


def test_it_does_not_rename_someone_elses(alice_client, bob_client):
    theirs = conversation_of(bob_client, "Bob's")
    response = alice_client.post(f"/c/{theirs.pk}/rename/", {"title": "Mine now"})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "Bob's"


def test_it_deletes_for_the_owner(alice_client):
    chat = conversation_of(alice_client)
    Message.objects.create(conversation=chat, role="user", content="bye")
    response = alice_client.post(f"/c/{chat.pk}/delete/")
    assert response.status_code == 200
    assert not Conversation.objects.filter(pk=chat.pk).exists()
    assert not Message.objects.exists()


def test_it_does_not_delete_someone_elses(alice_client, bob_client):
    theirs = conversation_of(bob_client)
    assert alice_client.post(f"/c/{theirs.pk}/delete/").status_code == 404
    assert Client().post(f"/c/{theirs.pk}/delete/").status_code == 404
    assert Conversation.objects.filter(pk=theirs.pk).exists()


def test_it_only_changes_conversations_by_post(alice_client):
    chat = conversation_of(alice_client)
    assert alice_client.get(f"/c/{chat.pk}/delete/").status_code == 405
    assert alice_client.get(f"/c/{chat.pk}/rename/").status_code == 405
    assert Conversation.objects.filter(pk=chat.pk).exists()


def test_it_enforces_csrf():
    client = Client(enforce_csrf_checks=True)
    page = client.get("/").content.decode()
    chat = conversation_of(client, "Guarded")
    assert client.post(f"/c/{chat.pk}/delete/").status_code == 403
    assert client.post(f"/c/{chat.pk}/rename/", {"title": "x"}).status_code == 403
    assert Conversation.objects.filter(pk=chat.pk, title="Guarded").exists()
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    response = client.post(f"/c/{chat.pk}/rename/", json.dumps({"title": "Renamed"}),
                           content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert client.post(f"/c/{chat.pk}/delete/", headers={"X-CSRFToken": token}).status_code == 200
    assert not Conversation.objects.filter(pk=chat.pk).exists()


@pytest.mark.parametrize("mode, staff, shown", [("all", False, True), ("staff", False, False), ("staff", True, True),
                                               ("none", True, False)])
def test_it_shows_token_counts_and_cost_only_to_whom_chat_show_usage_says(client, settings, mode, staff, shown):
    settings.CHAT_SHOW_USAGE = mode
    dana = User.objects.create_user("dana", password="pw", is_staff=staff)
    client.force_login(dana)
    chat = Conversation.objects.create(user=dana, title="Usage", model="demo/assistant")
    reply = Message.objects.create(conversation=chat, role="assistant", content="Hi")
    now = timezone.now()
    UsageRecord.objects.create(
        conversation=chat, message=reply, model="demo/assistant", status="completed", prompt_tokens=12,
        completion_tokens=7, cost_usd=Decimal("0.0000156000"), ttft_ms=230, duration_ms=930, started=now, finished=now,
    )
    page = client.get(f"/c/{chat.pk}/").content.decode()
    transcript = page.split('id="transcript"', 1)[1].split("<template", 1)[0]
    assert "230 ms" in transcript  # the first-token time is not usage: everyone sees it
    for figure in ("12 in · 7 out", "$0.0000156", "tok/s"):
        assert (figure in transcript) is shown, figure


def test_it_renders_the_templates_the_page_clones(alice_client):
    page = alice_client.get("/").content.decode()
    for template in ("user-template", "reply-template", "figures-template", "conversation-template"):
        assert f'<template id="{template}">' in page
    reply = page.split('<template id="reply-template">', 1)[1].split("</template>", 1)[0]
    assert 'class="message assistant"' in reply and 'aria-busy="true"' in reply and 'class="typing"' in reply
    item = page.split('<template id="conversation-template">', 1)[1].split("</template>", 1)[0]
    assert 'href="/c/0/"' in item and 'class="icon-button rename"' in item


def test_it_renders_the_cloned_templates_once_not_on_every_page(alice_client, bob_client, settings):
    from django.urls import set_script_prefix

    first = alice_client.get("/")
    second = bob_client.get("/")
    shown = [t.name for t in second.templates]
    assert "chat/message.html" not in shown and "chat/figures.html" not in shown, shown
    assert "chat/conversation_item.html" not in shown, shown
    clones = lambda page: [part.split("</template>", 1)[0] for part in page.content.decode().split("<template id=")[1:]]
    assert clones(first) == clones(second) and len(clones(second)) == 4
    # Kept per script prefix: behind a proxy at /chat/, the sidebar entry's link is /chat/c/0/.
    set_script_prefix("/chat/")
    try:
        from chat.views import page_parts
        assert 'href="/chat/c/0/"' in page_parts()["blank"]["conversation"]
        assert page_parts()["urls"]["session"] == "/chat/session/"
    finally:
        set_script_prefix("/")
    assert 'href="/c/0/"' in clones(alice_client.get("/"))[3]
    # Under DEBUG (templates edited under a running server) they are rendered on every page.
    settings.DEBUG = True
    assert "chat/message.html" in [t.name for t in alice_client.get("/").templates]


@pytest.mark.parametrize("chosen", ["²", "٣x", "-1", "1e3", "9" * 30])
def test_it_treats_a_conversation_parameter_that_is_not_an_id_as_none(alice_client, chosen):
    assert alice_client.get("/", {"c": chosen}).status_code in (200, 404)
