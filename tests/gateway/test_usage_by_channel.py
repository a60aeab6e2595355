"""usage_report --by channel and --by key; channel and key as admin filters."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from gateway.models import ApiKey
from tests.billing.conftest import make_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed():
    backend, _ = ApiKey.objects.create_key("backend")
    nightly, _ = ApiKey.objects.create_key("nightly")
    make_record(channel="chat", visitor="abcdefgh12345678")
    make_record(channel="api", api_key=backend, completion_tokens=10)
    make_record(channel="api", api_key=backend, completion_tokens=20)
    make_record(channel="batch", api_key=nightly, completion_tokens=30)
    make_record(channel="bench", completion_tokens=40)
    return backend, nightly


def report(by):
    out = StringIO()
    call_command("usage_report", "--by", by, "--format", "json", stdout=out)
    return {row["group"]: row for row in json.loads(out.getvalue())}


def test_it_reports_by_channel(mixed):
    rows = report("channel")
    assert {group: row["requests"] for group, row in rows.items()} == {"api": 2, "batch": 1, "bench": 1, "chat": 1}
    assert rows["api"]["completion_tokens"] == 30


def test_it_reports_by_key(mixed):
    rows = report("key")
    assert {group: row["requests"] for group, row in rows.items()} == {"(no key)": 2, "backend": 2, "nightly": 1}
    assert rows["nightly"]["completion_tokens"] == 30


def test_it_filters_records_by_channel_and_key_in_the_admin(mixed):
    backend, _ = mixed
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("carol", password="password"))
    page = client.get("/admin/billing/usagerecord/", {"channel": "api", "api_key__id__exact": backend.pk})
    assert page.status_code == 200
    assert page.context["cl"].result_count == 2
    assert "key:backend" in page.content.decode()
    assert client.get("/admin/billing/usagerecord/", {"channel": "bench"}).context["cl"].result_count == 1
