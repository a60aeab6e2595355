from django.core.management.base import BaseCommand, CommandError

from billing import price_import


class Command(BaseCommand):
    help = (
        "Import model prices from LiteLLM's model_prices_and_context_window.json or a CSV "
        "(model,input_per_mtok,output_per_mtok,cached_input_per_mtok[,effective_from]). "
        "A changed price becomes a new row; history is never rewritten."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="a LiteLLM JSON price list, or a .csv file")

    def handle(self, *args, file, verbosity=1, **options):
        try:
            offers, skipped = price_import.read(file)
        except price_import.PriceFileError as e:
            raise CommandError(str(e)) from None
        outcome = price_import.apply(offers, skipped)
        self.report(outcome, verbosity)

    def report(self, outcome, verbosity):
        """Write the counts, and with -v 2 the model ids, of what was added, changed, unchanged and skipped."""
        self.stdout.write(
            f"Added {len(outcome.added)}, changed {len(outcome.changed)}, "
            f"unchanged {len(outcome.unchanged)}, skipped {len(outcome.skipped)}."
        )
        if verbosity < 2:
            return
        for label, names in (("added", outcome.added), ("changed", outcome.changed), ("unchanged", outcome.unchanged)):
            for name in names:
                self.stdout.write(f"  {label}: {name}")
        for name, reason in outcome.skipped:
            self.stdout.write(f"  skipped: {name} ({reason})")
