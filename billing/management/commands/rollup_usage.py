from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from billing import periods, rollup
from billing.models import RollupSpan


class Command(BaseCommand):
    help = (
        "Sum the closed days and hours of the last N days (TIME_ZONE) into the dashboard's roll-up, so that its first "
        "opening need not: the dashboard does it itself for any span missing or stale. Run it nightly, or hourly."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=30, help="how many days back (default 30)")

    def handle(self, *args, days, **options):
        if days < 1:
            raise CommandError("--days must be at least 1.")
        tz = timezone.get_current_timezone()
        start, end = periods.period(since=f"{days}d", until="today", tz=tz)
        spans = rollup.closed_spans(start, end, tz=tz)
        with transaction.atomic():
            ids = rollup.ensure(spans, tz)
        fresh = RollupSpan.objects.filter(pk__in=ids, stale=False)
        # A day is summed by the hour until it closed GRACE ago: in the first hour of today that is yesterday.
        whole = sum(1 for span in fresh if span.ends - span.starts > rollup.HOUR)
        self.stdout.write(
            f"{whole} closed days from {start:%Y-%m-%d} and {len(fresh) - whole} closed hours after them summed in "
            f"the roll-up ({tz})."
        )
