"""Time the billing dashboard over a large usage table: cold and warm, the whole view, then each part alone.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_console_bench SECRET_KEY=x \
        .venv/bin/python bench/dashboard.py --rounds 5 --period 7d --period 30d

For each period: the roll-up of its past days is emptied and the page rendered once (cold: it sums those
days from the records), then rendered `rounds` times (warm: it reads the roll-up, and today from the
records); the view, its queries and its template, as a superuser gets it. The parts are then timed one by
one. Medians of the rounds, in milliseconds.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from billing import dashboard, rollup  # noqa: E402
from billing.models import RollupSpan, UsageRecord  # noqa: E402
from billing.views import dashboard_view  # noqa: E402


def timed(function, rounds):
    """Return (median ms, last result) of calling `function` `rounds` times."""
    times, result = [], None
    for _ in range(rounds):
        began = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--period", action="append", help="a --since value (default 7d and 30d)")
    args = parser.parse_args()
    total = UsageRecord.objects.count()
    print(f"{connection.vendor}, {total} usage records, {args.rounds} rounds, medians in ms")
    staff = get_user_model()(username="bench", is_staff=True, is_superuser=True, is_active=True)
    for since in args.period or ["7d", "30d"]:
        request = RequestFactory().get("/admin/billing/dashboard/", {"since": since})
        request.user = staff
        filters = dashboard.Filters.from_query({"since": since})
        RollupSpan.objects.filter(ends__gt=filters.start).delete()
        cold, _ = timed(lambda: dashboard_view(request).content, 1)
        with CaptureQueriesContext(connection) as queries:
            response = dashboard_view(request)
        assert response.status_code == 200, response.status_code
        ms, _ = timed(lambda: dashboard_view(request).content, args.rounds)
        records = filters.records()
        selected = records.count()
        spans = rollup.closed_spans(filters.start, filters.end)
        live = records.filter(started__gte=spans[-1][2] if spans else filters.start)
        print(f"\n--since {since}: {selected} records in the period, {live.count()} of them read live; "
              f"whole page cold {cold:.0f} ms, warm {ms:.0f} ms ({len(queries)} queries)")
        sums = rollup.gather(filters)
        parts = {
            "live days: six grouped queries": lambda: rollup.summed(live),
            "roll-up and live, gathered": lambda: rollup.gather(filters),
            "percentiles (exact)": lambda: dashboard.percentiles(records, sums),
            "top people": lambda: dashboard.top_people(sums),
            "refusals": lambda: dashboard.refusals(filters),
        }
        for name, function in parts.items():
            print(f"  {name:32s} {timed(function, args.rounds)[0]:7.0f}")
    since = (args.period or ["7d", "30d"])[-1]
    user = UsageRecord.objects.exclude(user=None).order_by().values_list("user__username", flat=True).first()
    visitor = UsageRecord.objects.filter(user=None).order_by().values_list("visitor", flat=True).first()
    for person in [user, f"visitor:{(visitor or '')[:8]}"]:
        request = RequestFactory().get("/admin/billing/dashboard/", {"since": since, "person": person})
        request.user = staff
        ms, _ = timed(lambda: dashboard_view(request).content, args.rounds)
        selected = dashboard.Filters.from_query({"since": since, "person": person}).records().count()
        print(f"\n--since {since} --person {person}: {selected} records, all read live; whole page {ms:.0f} ms")


if __name__ == "__main__":
    main()
