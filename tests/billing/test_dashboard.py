"""The admin's billing dashboard: staff only, and every chart's table equal to a direct count over seeded data."""

import math
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from billing.abandonment import BUCKETS
from billing.dashboard import TTFT_EDGES
from billing.models import Refusal, UsageRecord
from billing.synthetic import Seeder

pytestmark = pytest.mark.django_db

URL = "/admin/billing/dashboard/"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("carol", password="password")


@pytest.fixture
def seeded(db, settings):
    settings.TIME_ZONE = "Europe/Paris"  # local days differ from UTC days: the tables must use local ones
    Seeder(1500, days=7, seed=5, users=12, sessions=20).run()
    return list(UsageRecord.objects.select_related("abandonment", "user"))


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def local_day(record):
    return str(timezone.localtime(record.started).date())


def nearest_rank(values, p):
    values = sorted(values)
    return values[math.ceil(len(values) * p / 100) - 1] if values else None


def test_it_refuses_anonymous_visitors_and_people_who_are_not_staff(bob):
    assert Client().get(URL)["Location"].startswith("/admin/login/")
    response = logged_in(bob).get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_it_refuses_staff_without_the_permission_to_view_usage(db):
    clerk = get_user_model().objects.create_user("dave", password="password", is_staff=True)
    assert logged_in(clerk).get(URL).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    assert logged_in(get_user_model().objects.get(pk=clerk.pk)).get(URL).status_code == 200


def test_it_is_linked_from_the_admin_index(staff):
    assert f'href="{URL}"' in logged_in(staff).get("/admin/").content.decode()


def test_it_says_what_is_wrong_with_a_bad_period(staff):
    response = logged_in(staff).get(URL, {"since": "last tuesday"})
    assert response.status_code == 400 and "--since must be" in response.content.decode()


def test_its_tables_equal_direct_counts_over_seeded_data(staff, seeded):
    response = logged_in(staff).get(URL, {"since": "8d"})
    assert response.status_code == 200
    c = response.context
    assert len(seeded) == 1500 == c["total_requests"]

    # Cost per day by model, requests per day, tokens per day.
    cost, requests, prompt, completion = defaultdict(Decimal), Counter(), Counter(), Counter()
    for r in seeded:
        cost[local_day(r), r.model] += r.cost_usd or 0
        requests[local_day(r)] += 1
        prompt[local_day(r)] += r.prompt_tokens
        completion[local_day(r)] += r.completion_tokens
    for row in c["cost_rows"]:
        assert dict(zip(c["models"], row["costs"])) == {m: cost[row["day"], m] for m in c["models"]}
    assert {m for _, m in cost} == set(c["models"])
    assert {row["day"]: row["requests"] for row in c["request_rows"] if row["requests"]} == dict(requests)
    assert {row["day"]: (row["prompt_tokens"], row["completion_tokens"]) for row in c["token_rows"] if
            row["prompt_tokens"]} == {day: (prompt[day], completion[day]) for day in requests}
    assert len(c["cost_rows"]) == 8  # 8d: today and the 7 local days before

    # Time to first token per model: nearest-rank percentiles and the bin counts.
    timed = defaultdict(list)
    for r in seeded:
        if r.ttft_ms is not None:
            timed[r.model].append(r.ttft_ms)
    assert [row["model"] for row in c["ttft_rows"]] == sorted(timed)
    for row in c["ttft_rows"]:
        values = timed[row["model"]]
        assert (row["requests"], row["p50"], row["p95"]) == (len(values), nearest_rank(values, 50), nearest_rank(values, 95))
        edges = TTFT_EDGES + [math.inf]
        assert row["bins"] == [sum(1 for v in values if edges[i] <= v < edges[i + 1]) for i in range(len(TTFT_EDGES))]

    # Abandonment by the wait for a first token (its time to first token, or its duration with none).
    expected = []
    for label, low, high in BUCKETS:
        inside = [r for r in seeded if r.status != "failed"
                  and low <= (r.ttft_ms if r.ttft_ms is not None else r.duration_ms) < (high or math.inf)]
        left = [r.abandonment for r in inside if hasattr(r, "abandonment")]
        expected.append((label, len(inside), len(left), sum(e.phase == "before_first_token" for e in left),
                         sum(e.phase == "streaming" for e in left), sum(e.reason == "stop" for e in left),
                         sum(e.reason == "disconnect" for e in left)))
    got = [(r["bucket"], r["requests"], r["abandoned"], r["before_first_token"], r["streaming"], r["stop"],
            r["disconnect"]) for r in c["abandonment_rows"]]
    assert got == expected and sum(row[2] for row in got) > 0

    # Top people by cost.
    spent, made = defaultdict(Decimal), Counter()
    for r in seeded:
        who = r.user.username if r.user else f"visitor:{r.visitor[:8]}"
        spent[who] += r.cost_usd or 0
        made[who] += 1
    top = sorted(spent, key=lambda w: (-spent[w], w))[:10]
    assert [(row["who"], row["requests"], row["cost"]) for row in c["people_rows"]] == [(w, made[w], spent[w]) for w in top]

    # Savings: the median length of each model's completed replies, minus what each cut-short reply generated.
    lengths = defaultdict(list)
    for r in seeded:
        if r.status == "completed":
            lengths[r.model].append(r.completion_tokens)
    for row in c["savings_rows"]:
        cut = [r for r in seeded if r.model == row["model"] and r.status in ("stopped", "disconnected")]
        median = nearest_rank(lengths[row["model"]], 50)
        missing = [max(0, median - r.completion_tokens) for r in cut]
        assert (row["cut_short"], row["median_completion_tokens"], row["tokens_not_generated"]) == (
            len(cut), median, sum(missing))
        saved = sum((m * r.price.output_per_mtok / 1_000_000 for m, r in zip(missing, cut) if r.price), Decimal(0))
        assert Decimal(row["saved_usd"]) == saved.quantize(Decimal("1e-10"))

    html = response.content.decode()
    for title in ("Cost per day, stacked by model", "Requests per day", "Tokens per day", "Time to first token",
                  "Abandonment rate by wait", "Top people by cost"):
        assert f">{title}" in html
    assert html.count("<svg") >= 6 and html.count("<table") >= 8


def test_it_filters_by_model_and_person(staff, seeded):
    person = next(r.user for r in seeded if r.user)
    response = logged_in(staff).get(URL, {"since": "8d", "model": "openai/gpt-4.1", "person": person.username})
    mine = [r for r in seeded if r.model == "openai/gpt-4.1" and r.user_id == person.pk]
    assert response.context["total_requests"] == len(mine) > 0
    assert [row["who"] for row in response.context["people_rows"]] == [person.username]


def test_it_counts_refusals_per_day_and_kind(staff, settings):
    settings.TIME_ZONE = "Europe/Paris"
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    for created, kind in [(midnight + timedelta(minutes=5), "rate_limited"), (midnight + timedelta(minutes=6), "rate_limited"),
                          (midnight - timedelta(minutes=5), "budget_exceeded"), (midnight - timedelta(days=20), "rate_limited")]:
        Refusal.objects.create(created=created, kind=kind, scope="person")
    response = logged_in(staff).get(URL, {"since": "7d"})
    today, yesterday = str(midnight.date()), str((midnight - timedelta(hours=1)).date())
    assert response.context["refusals"] == {(yesterday, "budget_exceeded"): 1, (today, "rate_limited"): 2}
    assert "Refusals per day (rate limit, budget)" in response.content.decode()


def test_it_filters_by_visitor_prefix_and_by_unknown_people(staff, seeded):
    visitor = next(r.visitor for r in seeded if r.user_id is None)
    response = logged_in(staff).get(URL, {"since": "8d", "person": f"visitor:{visitor[:8]}"})
    mine = [r for r in seeded if r.user_id is None and r.visitor.startswith(visitor[:8])]
    assert response.context["total_requests"] == len(mine) > 0
    assert [row["who"] for row in response.context["people_rows"]] == [f"visitor:{visitor[:8]}"]
    assert logged_in(staff).get(URL, {"since": "8d", "person": "nobody"}).context["total_requests"] == 0
