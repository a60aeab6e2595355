from django.core.management.base import BaseCommand, CommandError

from billing import price_import


class Command(BaseCommand):
    help = (
        "Import model prices from LiteLLM's model_prices_and_context_window.json or a CSV "
        "(model,input_per_mtok,output_per_mtok,cached_input_per_mtok[,effective_from]; a header line may add "
        "cache_write_per_mtok). A changed price becomes a new row; history is never rewritten; the same file "
        "twice changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="a LiteLLM JSON price list, or a .csv file")
        parser.add_argument(
            "--only-configured", action="store_true",
            help="import only the models in CHAT_MODELS and those already priced",
        )
        parser.add_argument("--dry-run", action="store_true", help="say what would change, and change nothing")

    def handle(self, *args, file, only_configured, dry_run, verbosity=1, **options):
        try:
            offers, skipped, rounded = price_import.read(file)
        except price_import.PriceFileError as e:
            raise CommandError(str(e)) from None
        outcome = price_import.apply(
            offers, skipped, only_configured=only_configured, dry_run=dry_run, rounded=rounded
        )
        self.report(outcome, verbosity, dry_run)

    def report(self, outcome, verbosity, dry_run):
        """Write the counts, and with -v 2 the model ids, of what was added, changed, unchanged and skipped."""
        self.stdout.write(
            ("Dry run, nothing saved: would have added" if dry_run else "Added")
            + f" {len(outcome.added)}, changed {len(outcome.changed)}, "
            f"unchanged {len(outcome.unchanged)}, skipped {len(outcome.skipped)}."
        )
        if outcome.left_out:
            self.stdout.write(f"Left out {outcome.left_out} models neither configured nor priced (--only-configured).")
        if outcome.rounded:
            self.stdout.write(f"Rounded {len(outcome.rounded)} rates to 6 decimal places per million tokens.")
        for model, used, ignored in outcome.collisions:
            self.stdout.write(f"Collision: {model} is named by {used} (used) and {', '.join(ignored)} (ignored).")
        if verbosity < 2:
            return
        for label, names in (("added", outcome.added), ("changed", outcome.changed), ("unchanged", outcome.unchanged)):
            for name in names:
                self.stdout.write(f"  {label}: {name}")
        for name, reason in outcome.skipped:
            self.stdout.write(f"  skipped: {name} ({reason})")
        for key, exact, stored in outcome.rounded:
            self.stdout.write(f"  rounded: {key} {exact.normalize():f} -> {stored.normalize():f} $/Mtok")
