"""Time the billing dashboard over a large usage table: the whole view, then each figure alone.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_billing SECRET_KEY=x \
        .venv/bin/python bench/dashboard.py --rounds 5 --period 7d --period 30d

Each round renders the page as a superuser would get it (the view, its queries and its template) and
times it; the figures are then timed one by one. Medians of the rounds, in milliseconds.
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

from billing import abandonment, dashboard, reports, savings  # noqa: E402
from billing.models import UsageRecord  # noqa: E402
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
        with CaptureQueriesContext(connection) as queries:
            response = dashboard_view(request)
        assert response.status_code == 200, response.status_code
        ms, _ = timed(lambda: dashboard_view(request).content, args.rounds)
        filters = dashboard.Filters.from_query({"since": since})
        records = filters.records()
        selected = records.count()
        print(f"\n--since {since}: {selected} records in the period; whole page {ms:.0f} ms, {len(queries)} queries")
        if connection.vendor == "postgresql":
            connection.cursor().execute("SET work_mem = '64MB'")  # as dashboard.figures sets it for its transaction
        medians = {m: (p[2],) for m, p in dashboard.percentiles(records).items()}
        parts = {
            "one scan: day x model x status x bins": lambda: dashboard.scan(records),
            "percentiles (ttft, reply length)": lambda: dashboard.percentiles(records),
            "abandonment events": lambda: abandonment.by_first_token_wait(records=records, requests={}),
            "top people": lambda: dashboard.top_people(records),
            "savings: replies cut short": lambda: savings.savings(records=records, medians=medians),
            "reconciliation": lambda: reports.reconcile(records=records),
            "refusals": lambda: dashboard.refusals(filters),
        }
        for name, function in parts.items():
            print(f"  {name:30s} {timed(function, args.rounds)[0]:7.0f}")


if __name__ == "__main__":
    main()
