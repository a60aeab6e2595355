from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from billing import periods, rollup
from billing.models import RollupDay


class Command(BaseCommand):
    help = (
        "Sum the closed days of the last N days (TIME_ZONE) into the dashboard's roll-up, so that its first opening "
        "need not: the dashboard does it itself for any day missing or stale. Run it nightly, an hour after midnight."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=30, help="how many days back (default 30)")

    def handle(self, *args, days, **options):
        if days < 1:
            raise CommandError("--days must be at least 1.")
        tz = timezone.get_current_timezone()
        end = rollup.closed_until(tz=tz)
        start = periods.midnight(timezone.localtime(end, tz).date() - timedelta(days=days), tz)
        with transaction.atomic():
            ids = rollup.ensure(start, end, tz)
        fresh = RollupDay.objects.filter(pk__in=ids, stale=False).count()
        self.stdout.write(f"{fresh} closed days from {start:%Y-%m-%d} summed in the roll-up ({tz}).")
