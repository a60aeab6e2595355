from django.core.management.base import BaseCommand, CommandError

from billing import synthetic


class Command(BaseCommand):
    help = (
        "Insert N synthetic usage records (with abandonment events) spread over the last D days, into a database "
        "with no real records (or with --force); --clear removes them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--records", type=int, help="how many usage records to create")
        parser.add_argument("--days", type=int, default=30, help="spread them over this many days (default 30)")
        parser.add_argument("--seed", type=int, default=0, help="random seed, for reproducible data (default 0)")
        parser.add_argument(
            "--force", action="store_true", help="seed even though the database holds real usage records",
        )
        parser.add_argument(
            "--clear", action="store_true", help="delete what seed_usage made (records, events, seed-user-* users)",
        )

    def handle(self, *args, records, days, seed, force, clear, **options):
        if clear:
            if records is not None:
                raise CommandError("Use --clear alone: it removes seeded records and creates none.")
            removed = synthetic.clear()
            return self.stdout.write(f"Removed {removed} seeded usage records; real records are untouched.")
        if records is None or records < 1:
            raise CommandError("--records must be at least 1.")
        if days < 1:
            raise CommandError("--days must be at least 1.")
        real = synthetic.real().count()
        if real and not force:
            raise CommandError(
                f"This database holds {real} real usage records: seeded ones would mix with them in every report. "
                "Seed a fresh database (DATABASE_URL=...), or pass --force; `seed_usage --clear` removes seeded "
                "records later."
            )
        made = synthetic.Seeder(records, days=days, seed=seed).run()
        self.stdout.write(f"Created {made} usage records over the last {days} days (seed {seed}).")
