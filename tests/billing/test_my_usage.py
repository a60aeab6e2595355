"""A signed-in person's own usage page: today, this month, the budget left; nobody else's records."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.test import Client

from tests.billing.conftest import make_record

pytestmark = pytest.mark.django_db

URL = "/usage/"


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_it_shows_a_person_their_spend_today_and_this_month_and_the_budget_left(alice, bob, settings):
    settings.CHAT_DAILY_BUDGET_USD = Decimal("0.01")
    now = datetime.now(timezone.utc)
    midnight = datetime.combine(now.date(), datetime.min.time(), timezone.utc)
    today = [make_record(midnight + timedelta(seconds=1), user=alice, prompt_tokens=1000, completion_tokens=1000)]
    earlier = []
    if now.day > 1:  # earlier this month (UTC), when there is an earlier day this month
        earlier.append(make_record(midnight - timedelta(hours=1), user=alice, prompt_tokens=2000))
    make_record(midnight.replace(day=1) - timedelta(hours=1), user=alice)  # last month: not counted
    make_record(midnight + timedelta(seconds=2), user=bob, prompt_tokens=99_000)  # someone else's
    response = logged_in(alice).get(URL)
    c = response.context
    spent = sum(r.cost_usd for r in today)
    assert (c["today_requests"], c["today_cost"]) == (1, spent)
    assert (c["month_requests"], c["month_cost"]) == (1 + len(earlier), spent + sum(r.cost_usd for r in earlier))
    assert c["remaining"] == Decimal("0.01") - spent == Decimal("0.008")  # 1000 at 0.40 + 1000 at 1.60 per million
    html = response.content.decode()
    assert 'id="remaining">$0.00800<' in html and "Your usage" in html


def test_it_says_when_there_is_no_budget(alice, settings):
    settings.CHAT_DAILY_BUDGET_USD = None
    response = logged_in(alice).get(URL)
    assert response.context["remaining"] is None and "no daily budget" in response.content.decode()


def test_it_sends_a_visitor_who_is_not_signed_in_to_the_login_page():
    response = Client().get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_is_linked_from_the_chat_page_for_a_signed_in_person(alice):
    assert 'href="/usage/"' in logged_in(alice).get("/").content.decode()
    assert 'href="/usage/"' not in Client().get("/").content.decode()


def test_it_respects_chat_show_usage(alice, settings):
    settings.CHAT_SHOW_USAGE = "none"
    client = logged_in(alice)
    assert client.get(URL).status_code == 404
    assert 'href="/usage/"' not in client.get("/").content.decode()
