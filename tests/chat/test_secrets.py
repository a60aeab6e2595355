"""An upstream that echoes the request's key: no trace of it in the frame, the record, the CSV, the admin or the log."""

import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from billing.models import UsageRecord
from chat.redaction import REDACTED, redact
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-proj-Zx81SuperSecretKeyNobodySees0123"
ODD_KEY = "gw_live_9f8e7d6c5b4a"  # a gateway key that looks like nothing in particular


def test_it_redacts_configured_keys_and_anything_shaped_like_a_key(settings):
    settings.CHAT_PROVIDERS = {**settings.CHAT_PROVIDERS, "gw": {"api": "openai", "base_url": "", "api_key": ODD_KEY}}
    text = (f"HTTP 401: Incorrect API key provided: Bearer {KEY}; also {ODD_KEY}, sk-ant-api03-abcdefghij, "
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc, api_key=abcdef123456")
    cleaned = redact(text)
    for secret in (KEY, ODD_KEY, "sk-ant-api03", "eyJhbGci", "abcdef123456"):
        assert secret not in cleaned
    assert cleaned.startswith("HTTP 401: Incorrect API key provided: ") and REDACTED in cleaned
    assert redact("The upstream stalled for over 30 s mid-reply.") == "The upstream stalled for over 30 s mid-reply."


def admin_pages(record_id, ref):
    user = get_user_model().objects.create_superuser("op", password="pw")
    client = Client()
    client.force_login(user)
    change = client.get(f"/admin/billing/usagerecord/{record_id}/change/")
    listing = client.get("/admin/billing/usagerecord/", {"q": ref})  # an operator looks the reference up
    export = client.get("/admin/billing/usagerecord/export.csv")
    assert change.status_code == listing.status_code == export.status_code == 200
    csv = b"".join(export.streaming_content).decode() if export.streaming else export.content.decode()
    return change.content.decode(), listing.content.decode(), csv


@pytest.mark.parametrize("prefix", ["mock/gpt-4.1-mini", "mockanthropic/claude-sonnet-4-5"])
async def test_it_leaves_no_trace_of_a_key_the_upstream_echoes(alice_session, settings, use_mock, caplog, prefix):
    for provider in ("mock", "mockanthropic"):
        settings.CHAT_PROVIDERS = {**settings.CHAT_PROVIDERS,
                                   provider: {**settings.CHAT_PROVIDERS[provider], "api_key": KEY}}
    model = f"{prefix}+fault=echo_key"
    allow(settings, model)
    caplog.set_level(logging.DEBUG)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello", "model": model})
    frames = await receive_until_done(ws)
    await ws.disconnect()
    assert use_mock.stats()["log"][-1]["http_status"] == 401  # the upstream did echo it (see the mock's log)

    error = next(f for f in frames if f["type"] == "error")
    record = await UsageRecord.objects.aget()
    assert error["code"] == "upstream_error" and "HTTP 401" in error["message"]
    assert error["ref"] == str(record.request_id) and error["ref"] in error["message"]  # quotable to an operator
    assert "Incorrect API key" not in error["message"]  # a plain message: the upstream's words stay on the record
    assert "Incorrect API key provided" in record.error and REDACTED in record.error
    change, listing, csv = await sync_to_async(admin_pages)(record.pk, error["ref"])
    assert f"/usagerecord/{record.pk}/change/" in listing and "Incorrect API key provided" in change
    for place, text in {"frames": str(frames), "record": record.error, "admin change page": change,
                        "admin list": listing, "CSV export": csv, "log": caplog.text}.items():
        assert KEY not in text, f"the key leaked into the {place}"
        assert "SuperSecret" not in text, f"part of the key leaked into the {place}"
