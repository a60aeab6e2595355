"""Anonymous visitors are known by a keyed hash of their session key: the key is never stored or shown."""

import json
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from billing.models import AbandonmentEvent, UsageRecord
from chat.models import Conversation, Message
from chat.visitors import visitor_hash
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_hashes_with_the_secret_key(settings):
    key = "k" * 32
    first = visitor_hash(key)
    assert len(first) == 32 and key not in first and visitor_hash(key) == first
    assert visitor_hash("x" * 32) != first
    settings.SECRET_KEY = "another secret"
    assert visitor_hash(key) != first
    assert visitor_hash("") == ""


def everything_stored():
    """Return every stored value of conversations, messages, usage records and abandonment events as text."""
    rows = []
    for model in (Conversation, Message, UsageRecord, AbandonmentEvent):
        rows.extend(json.dumps(list(model.objects.values()), default=str))
    return "".join(rows)


def admin_and_exports():
    """Return what an operator can read: the admin's usage pages, the CSV export and the reports."""
    staff = get_user_model().objects.create_superuser("carol", password="password")
    client = Client()
    client.force_login(staff)
    record = UsageRecord.objects.get()
    pages = [
        client.get("/admin/billing/usagerecord/").content.decode(),
        client.get(f"/admin/billing/usagerecord/{record.pk}/change/").content.decode(),
        client.get("/admin/billing/abandonmentevent/").content.decode(),
        b"".join(client.get("/admin/billing/usagerecord/export.csv").streaming_content).decode(),
    ]
    for fmt in ("table", "csv", "json"):
        out = StringIO()
        call_command("usage_report", "--by", "user", "--format", fmt, "--days", "2", stdout=out)
        pages.append(out.getvalue())
    return pages


async def test_it_keeps_the_raw_session_key_out_of_billing_data_the_admin_and_the_csv(alice_session):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello"})
    frames = await receive_until_done(ws)
    await ws.disconnect()
    assert frames[-1]["status"] == "completed"

    record = await UsageRecord.objects.aget()
    assert record.visitor == visitor_hash(alice_session) and record.user_id is None
    assert (await Conversation.objects.aget()).visitor == record.visitor
    assert alice_session not in await sync_to_async(everything_stored)()
    pages = await sync_to_async(admin_and_exports)()
    assert f"visitor:{record.visitor[:8]}" in pages[0]
    for page in pages:
        assert alice_session not in page and alice_session[:8] not in page


async def test_it_finds_conversations_by_the_hash_of_the_cookies_key(alice_session, bob_session):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "mine"})
    conversation = (await receive_until_done(ws))[0]["conversation"]
    await ws.disconnect()
    # The stored hash, pasted as a cookie, opens nothing: only the key it was made from does.
    stored = (await Conversation.objects.aget()).visitor
    for key, found in ((alice_session, True), (stored, False), (bob_session, False)):
        client = Client()
        client.cookies["sessionid"] = key
        response = await sync_to_async(client.get)(f"/c/{conversation}/")
        assert (response.status_code == 200) is found, key
