"""`manage.py apikey create|list|revoke` and the admin's key pages."""

import hashlib
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from gateway.models import ApiKey

pytestmark = pytest.mark.django_db


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_creates_a_key_prints_it_once_and_stores_it_hashed(settings):
    settings.CHAT_MODELS = ["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5"]
    get_user_model().objects.create_user("alice")
    out, err = run("create", "--name", "backend", "--user", "alice", "--daily-budget", "2.50",
                   "--models", "openai/gpt-4.1-mini", "--rate-limit", "60", "--expires", "30")
    raw = out.strip()
    assert raw.startswith("cs-") and len(raw) > 40 and "shown once" in err
    key = ApiKey.objects.get(name="backend")
    assert key.hashed == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {key.prefix, key.hashed, key.allowed_models} and raw.startswith(key.prefix)
    assert (key.user.username, key.daily_budget_usd, key.rate_limit) == ("alice", Decimal("2.5"), 60)
    assert key.models_allowed() == ["openai/gpt-4.1-mini"] and key.expires is not None
    assert ApiKey.objects.authenticate(raw) == key
    assert ApiKey.objects.authenticate(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None


def test_it_lists_keys_without_their_secret():
    _, raw = ApiKey.objects.create_key("backend", daily_budget_usd=Decimal("5"))
    ApiKey.objects.create_key("old")[0].revoke()
    out, _ = run("list")
    assert raw not in out and raw[:10] in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "state", "prefix"]
    assert lines[1].split()[:2] == ["backend", "active"] and "$5" in lines[1]
    assert lines[2].split()[:2] == ["old", "revoked"]


def test_it_revokes_a_key_by_name():
    _, raw = ApiKey.objects.create_key("backend")
    out, _ = run("revoke", "backend")
    assert "Revoked" in out and ApiKey.objects.authenticate(raw) is None
    assert ApiKey.objects.get(name="backend").state == "revoked"


@pytest.mark.parametrize("args, message", [
    (["create", "--name", "dup"], "exists"),
    (["create", "--name", "x", "--user", "nobody"], "No user named 'nobody'"),
    (["create", "--name", "x", "--models", "openai/gpt-9"], "Not in CHAT_MODELS: openai/gpt-9"),
    (["create", "--name", "x", "--daily-budget", "lots"], "--daily-budget must be an amount"),
    (["create", "--name", "x", "--expires", "someday"], "--expires must be"),
    (["revoke", "nobody"], "No key named 'nobody'"),
])
def test_it_names_what_to_fix(args, message):
    ApiKey.objects.create_key("dup")
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert ApiKey.objects.count() == 1


def test_it_lets_staff_create_a_key_in_the_admin_and_shows_it_once():
    staff = get_user_model().objects.create_superuser("carol", password="password")
    client = Client()
    client.force_login(staff)
    response = client.post("/admin/gateway/apikey/add/", {"name": "from-admin", "rate_limit": 0}, follow=True)
    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "shown only this once" in str(m)]
    raw = message.split(" is ")[1].split(" ")[0]
    assert ApiKey.objects.authenticate(raw).name == "from-admin"
    page = client.get("/admin/gateway/apikey/").content.decode()
    assert "from-admin" in page and raw not in page
