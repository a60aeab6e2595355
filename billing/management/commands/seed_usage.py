from django.core.management.base import BaseCommand, CommandError

from billing.synthetic import Seeder


class Command(BaseCommand):
    help = "Insert N synthetic usage records (with abandonment events) spread over the last D days."

    def add_arguments(self, parser):
        parser.add_argument("--records", type=int, required=True, help="how many usage records to create")
        parser.add_argument("--days", type=int, default=30, help="spread them over this many days (default 30)")
        parser.add_argument("--seed", type=int, default=0, help="random seed, for reproducible data (default 0)")

    def handle(self, *args, records, days, seed, **options):
        if records < 1:
            raise CommandError("--records must be at least 1.")
        if days < 1:
            raise CommandError("--days must be at least 1.")
        made = Seeder(records, days=days, seed=seed).run()
        self.stdout.write(f"Created {made} usage records over the last {days} days (seed {seed}).")
