"""The dashboard's daily roll-up: equal to direct queries over the records, before and after past days change."""

from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.utils import timezone

from billing import rollup, synthetic
from billing.dashboard import Filters
from billing.models import AbandonmentEvent, RollupSpan, UsageRecord
from billing.synthetic import Seeder
from tests.billing.conftest import make_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(db, settings):
    settings.TIME_ZONE = "Europe/Paris"  # local days differ from UTC days
    Seeder(900, days=7, seed=11, users=6, sessions=10).run()


def comparable(sums):
    """Return what a Sums says, summed over days where the roll-up does not keep them per day."""
    cuts = Counter()
    for (_, model, price, tokens), n in sums.cuts.items():
        cuts[model, price, tokens] += n
    return {
        "cells": sums.cells, "people": rollup.by_person(sums), "histograms": rollup.histograms(sums),
        "cuts": dict(cuts),
    }


def assert_rollup_equals_direct(filters):
    gathered = comparable(rollup.gather(filters))
    direct = comparable(rollup.summed(filters.records()))
    assert gathered == direct
    return gathered


def past_days():
    """Return the roll-up's whole days (not the hours of today)."""
    return RollupSpan.objects.filter(time_zone="Europe/Paris", ends__gt=F("starts") + timedelta(hours=2))


def test_it_equals_direct_queries_and_stays_equal_when_a_past_day_changes(seeded):
    filters = Filters.from_query({"since": "8d"})
    first = assert_rollup_equals_direct(filters)
    assert past_days().count() >= 5 and not past_days().filter(stale=True).exists()
    assert sum(v["requests"] for v in first["cells"].values()) == UsageRecord.objects.count() == 900

    # A late write for a past day, with its abandonment event: that day only goes stale, and is summed again.
    three_days_ago = timezone.now() - timedelta(days=3)
    day = timezone.localtime(three_days_ago).date()
    record = make_record(three_days_ago, status="stopped", completion_tokens=7, ttft_ms=4321, cost_usd=None,
                         abandonment={"reason": "stop", "phase": "streaming", "elapsed_ms": 5000})
    assert list(past_days().filter(stale=True).values_list("day", flat=True)) == [day]
    assert_rollup_equals_direct(filters)
    assert not past_days().filter(stale=True).exists()

    # An event deleted on its own, then a record updated in place (as adopt() and SET_NULL do).
    AbandonmentEvent.objects.filter(record=record).delete()
    assert past_days().get(day=day).stale
    assert_rollup_equals_direct(filters)
    UsageRecord.objects.filter(pk=record.pk).update(model="openai/gpt-4.1", user=None, visitor="f" * 32)
    assert past_days().get(day=day).stale
    assert_rollup_equals_direct(filters)

    # Records deleted by a queryset (their events by cascade), then by raw SQL.
    victims = UsageRecord.objects.filter(started__lt=timezone.now() - timedelta(days=2)).order_by("started")[:40]
    UsageRecord.objects.filter(pk__in=list(victims.values_list("pk", flat=True))).delete()
    assert past_days().filter(stale=True).exists()
    assert_rollup_equals_direct(filters)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_abandonmentevent WHERE record_id IN "
                       "(SELECT id FROM billing_usagerecord WHERE status = 'stopped')")
        cursor.execute("DELETE FROM billing_usagerecord WHERE status = 'stopped'")
    assert_rollup_equals_direct(filters)

    # seed_usage --clear: every past day is emptied.
    synthetic.clear()
    assert past_days().filter(stale=True).exists()
    assert assert_rollup_equals_direct(filters)["cells"] == {} and not UsageRecord.objects.exists()


def test_todays_writes_leave_the_roll_up_alone(seeded):
    filters = Filters.from_query({"since": "8d"})
    rollup.gather(filters)
    computed = dict(past_days().values_list("day", "computed"))
    make_record(timezone.now())
    assert not RollupSpan.objects.filter(stale=True).exists()
    rollup.gather(filters)
    assert dict(past_days().values_list("day", "computed")) == computed  # nothing summed again
    # Two hours ago today (or today's first minute, in its first two hours): at most the closed hour it falls in
    # goes stale, and the sums stay equal.
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    make_record(max(timezone.now() - timedelta(hours=2), midnight), ttft_ms=77)
    assert RollupSpan.objects.filter(stale=True).count() <= 1 and not past_days().filter(stale=True).exists()
    assert_rollup_equals_direct(filters)


def test_a_model_filter_reads_that_models_rows(seeded):
    filters = Filters.from_query({"since": "8d", "model": "anthropic/claude-haiku-4-5"})
    found = assert_rollup_equals_direct(filters)
    assert {key[1] for key in found["cells"]} == {"anthropic/claude-haiku-4-5"}


def test_percentiles_are_exact_across_bucket_edges(db):
    # Values on both sides of several bucket edges: the histogram finds the bucket, the query the value.
    started = timezone.now() - timedelta(days=3)
    values = [5, 9, 10, 199, 200, 201, 499, 500, 999, 1000, 1001, 4999, 5000, 123_456]
    for v in values:
        make_record(started, ttft_ms=v)
    filters = Filters.from_query({"since": "7d"})
    records = filters.records()
    histogram = rollup.histograms(rollup.gather(filters))["openai/gpt-4.1-mini", "ttft"]
    ordered = sorted(values)
    for p in (1, 10, 50, 90, 95, 99, 100):
        nearest = ordered[-(-len(values) * p // 100) - 1]
        assert rollup.percentile(records, "openai/gpt-4.1-mini", "ttft", histogram, p) == nearest


def test_rollup_usage_sums_the_closed_days_ahead_of_the_dashboard(seeded):
    out = StringIO()
    call_command("rollup_usage", "--days", "10", stdout=out)
    days = past_days().count()
    assert days >= 6 and f"{days} closed days from" in out.getvalue() and "closed hours after them" in out.getvalue()
    assert_rollup_equals_direct(Filters.from_query({"since": "8d"}))
    assert past_days().count() == days  # the dashboard found them all summed
    with pytest.raises(CommandError, match="--days must be at least 1"):
        call_command("rollup_usage", "--days", "0")


def test_rollup_usage_counts_a_day_summed_by_the_hour_as_hours(db, monkeypatch, settings):
    settings.TIME_ZONE = "Europe/Paris"
    # 00:13 in Paris: yesterday closed 13 minutes ago, less than GRACE, so it is summed hour by hour.
    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 11, 30, 0, 13, tzinfo=ZoneInfo("Europe/Paris")))
    out = StringIO()
    call_command("rollup_usage", "--days", "3", stdout=out)
    # --days 3 is 28 November to today: the 28th whole, the 29th by its hours that ended by 23:13 (00:00-23:00).
    assert out.getvalue() == "1 closed days from 2026-11-28 and 23 closed hours after them summed in the roll-up (Europe/Paris).\n"


def test_closed_spans_tile_whole_days_then_the_hours_of_today_across_a_dst_change():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    start = datetime(2025, 3, 28, tzinfo=paris)
    end = datetime(2025, 3, 31, tzinfo=paris)
    now = datetime(2025, 3, 30, 12, 30, tzinfo=paris)  # clocks went from 02:00 to 03:00 this morning
    spans = rollup.closed_spans(start, end, now=now, tz=paris)
    assert [s[0].day for s in spans[:2]] == [28, 29] and spans[0][1] == start
    hours = spans[2:]
    assert all(e - s == timedelta(hours=1) for _, s, e in hours)
    assert all(a[2] == b[1] for a, b in zip(spans, spans[1:]))  # contiguous
    assert hours[0][1] == datetime(2025, 3, 30, tzinfo=paris) and hours[-1][2] == datetime(2025, 3, 30, 11, tzinfo=paris)
    assert len(hours) == 10  # 00:00-11:00 local is 10 hours long today; 11:00-12:00 ends within the grace hour
