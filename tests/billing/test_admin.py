import csv
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.billing.conftest import DAY1, make_record

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/billing/usagerecord/"
EXPORT = "/admin/billing/usagerecord/export.csv"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("carol", password="password")


@pytest.fixture
def records(alice):
    stop = {"reason": "stop", "phase": "streaming", "tokens_delivered": 3, "elapsed_ms": 400}
    return [
        make_record(model="openai/gpt-4.1-mini", user=alice, prompt_tokens=1000, completion_tokens=100),
        make_record(model="openai/gpt-4.1-mini", status="stopped", abandonment=stop, visitor="abcdefgh1234"),
        make_record(model="local/llama-3.1-8b", prompt_tokens=10, completion_tokens=5),
    ]


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def read_csv(response):
    return list(csv.DictReader(StringIO(b"".join(response.streaming_content).decode())))


def test_it_shows_the_changelist_with_totals_and_per_model_summary(staff, records):
    response = logged_in(staff).get(CHANGELIST)
    assert response.status_code == 200
    totals = response.context["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["unpriced"]) == (3, 1110, 1)
    assert totals["cost_usd"] == f"{sum(r.cost_usd for r in records if r.cost_usd is not None):.10f}"
    per_model = {row["group"]: row["requests"] for row in response.context["per_model"]}
    assert per_model == {"openai/gpt-4.1-mini": 2, "local/llama-3.1-8b": 1}
    html = response.content.decode()
    assert "unpriced" in html and "Export CSV" in html and "alice" in html


def test_it_totals_only_the_filtered_records(staff, records):
    response = logged_in(staff).get(CHANGELIST, {"model": "local/llama-3.1-8b"})
    assert response.context["totals"]["requests"] == 1
    assert response.context["export_url"].endswith("?model=local%2Fllama-3.1-8b")


def test_it_runs_a_fixed_number_of_queries_whatever_the_page_size(staff, records, django_assert_max_num_queries):
    client = logged_in(staff)
    for _ in range(20):
        make_record(model="openai/gpt-4.1-mini", user=staff)
    with django_assert_max_num_queries(16):
        assert client.get(CHANGELIST).status_code == 200


def test_it_exports_the_filtered_records_as_csv(staff, records):
    response = logged_in(staff).get(EXPORT, {"model": "openai/gpt-4.1-mini"})
    assert response.status_code == 200 and response.streaming
    rows = read_csv(response)
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"completed", "stopped"}
    assert {r["abandonment_reason"] for r in rows} == {"", "stop"}


def test_it_exports_more_than_a_page(staff, records, monkeypatch):
    monkeypatch.setattr("billing.exports.PAGE", 2)
    rows = read_csv(logged_in(staff).get(EXPORT))
    assert sorted(r["request_id"] for r in rows) == sorted(str(r.request_id) for r in records)


def test_it_exports_the_selected_records(staff, records):
    selected = [records[0].pk, records[2].pk]
    response = logged_in(staff).post(
        CHANGELIST, {"action": "export_selected", "_selected_action": selected, "index": 0}
    )
    rows = read_csv(response)
    costs = {r["request_id"]: r["cost_usd"] for r in rows}
    assert costs == {str(records[0].request_id): f"{records[0].cost_usd:.10f}", str(records[2].request_id): ""}


def test_it_shows_a_record_with_its_abandonment_inline(staff, records):
    response = logged_in(staff).get(f"{CHANGELIST}{records[1].pk}/change/")
    assert response.status_code == 200
    assert "streaming" in response.content.decode()


def test_it_lists_abandonment_events_and_prices(staff, records):
    client = logged_in(staff)
    events = client.get("/admin/billing/abandonmentevent/")
    assert events.status_code == 200 and f"/admin/billing/usagerecord/{records[1].pk}/change/" in events.content.decode()
    prices = client.get("/admin/billing/modelprice/", {"model": "openai/gpt-4.1-mini"})
    assert prices.status_code == 200 and "0.400000" in prices.content.decode()


def test_it_refuses_to_add_or_delete_records(staff, records):
    client = logged_in(staff)
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    assert client.post(f"{CHANGELIST}{records[0].pk}/delete/", {"post": "yes"}).status_code == 403


@pytest.mark.parametrize("url", [CHANGELIST, EXPORT, "/admin/billing/modelprice/"])
def test_it_sends_an_anonymous_visitor_to_the_login_page(records, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [CHANGELIST, EXPORT])
def test_it_refuses_a_user_who_is_not_staff(bob, records, url):
    response = logged_in(bob).get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_shows_costs_at_a_readable_precision_in_lists_and_exactly_in_detail(staff, records):
    client = logged_in(staff)
    exact = f"{records[0].cost_usd:.10f}"  # 1000 * 0.40 + 100 * 1.60 per million = 0.00056
    assert exact == "0.0005600000"
    listing = client.get(CHANGELIST).content.decode()
    assert ">0.000560<" in listing and exact not in listing
    assert exact in client.get(f"{CHANGELIST}{records[0].pk}/change/").content.decode()


@pytest.mark.parametrize("value, shown", [
    ("5.3952461930", "5.40"), ("1234.5", "1,234.50"), ("0.0123456", "0.0123"), ("0.5", "0.500"), ("0", "0"),
])
def test_it_rounds_costs_for_display(value, shown):
    from billing.templatetags.billing import cost

    assert cost(value) == shown


def test_it_totals_abandonment_by_phase(staff, records):
    leave = {"reason": "disconnect", "phase": "before_first_token", "tokens_delivered": 0, "elapsed_ms": 90}
    make_record(status="disconnected", ttft_ms=None, abandonment=leave)
    response = logged_in(staff).get(CHANGELIST)
    totals = response.context["totals"]
    assert (totals["abandoned"], totals["abandoned_before_first_token"], totals["abandoned_streaming"]) == (2, 1, 1)
    mini = next(r for r in response.context["per_model"] if r["group"] == "openai/gpt-4.1-mini")
    assert (mini["abandoned"], mini["abandoned_before_first_token"], mini["abandoned_streaming"]) == (2, 1, 1)
    assert "before first token" in response.content.decode()


@pytest.mark.parametrize("value, statuses", [
    ("streaming", ["stopped"]), ("before_first_token", ["disconnected"]), ("no", ["completed", "completed"]),
])
def test_it_filters_records_by_abandonment_phase(staff, records, value, statuses):
    leave = {"reason": "disconnect", "phase": "before_first_token", "tokens_delivered": 0, "elapsed_ms": 90}
    make_record(status="disconnected", ttft_ms=None, abandonment=leave)
    response = logged_in(staff).get(CHANGELIST, {"abandoned": value})
    assert sorted(r.status for r in response.context["cl"].result_list) == sorted(statuses)


def test_it_filters_events_by_date_including_yesterday(staff):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import AbandonmentEvent

    stop = {"reason": "stop", "phase": "streaming", "tokens_delivered": 3, "elapsed_ms": 400}
    old, new = make_record(status="stopped", abandonment=stop), make_record(status="stopped", abandonment=stop)
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    AbandonmentEvent.objects.filter(record=old).update(created=midnight - timedelta(hours=2))
    client = logged_in(staff)
    page = client.get("/admin/billing/abandonmentevent/")
    yesterday = next(c for c in page.context["cl"].filter_specs[0].choices(page.context["cl"]) if c["display"] == "Yesterday")
    filtered = client.get("/admin/billing/abandonmentevent/" + yesterday["query_string"])
    assert [e.record_id for e in filtered.context["cl"].result_list] == [old.pk]
    assert new.pk != old.pk


def test_it_marks_the_price_in_force_with_one_query_for_all_rows(staff, django_assert_max_num_queries):
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from billing.models import ModelPrice

    now = timezone.now()
    for days in (30, 10, -5):  # two past prices and one that starts in five days
        ModelPrice.objects.create(model="acme/x", input_per_mtok=Decimal(days % 7), output_per_mtok=1,
                                  effective_from=now - timedelta(days=days))
    for i in range(40):
        ModelPrice.objects.create(model=f"acme/filler-{i}", input_per_mtok=1, output_per_mtok=1)
    client = logged_in(staff)
    with django_assert_max_num_queries(8):
        response = client.get("/admin/billing/modelprice/", {"q": "acme/", "all": ""})
    shown = {p.pk: p.current == p.pk for p in response.context["cl"].result_list}
    current = {p.pk: p.effective_from for p in ModelPrice.objects.filter(model="acme/x")}
    in_force = [pk for pk in current if shown[pk]]
    assert in_force == [max((pk for pk in current if current[pk] <= now), key=current.get)]
    assert all(shown[p.pk] for p in ModelPrice.objects.filter(model__startswith="acme/filler-"))
