import csv
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import abandonment, periods, reports, savings

FORMATS = ("table", "csv", "json")


class Command(BaseCommand):
    help = (
        "Report requests, tokens, cost, abandonment and time to first token, grouped by one or two of model, day, "
        "user, status, channel and API key, over whole calendar days in TIME_ZONE (or --tz)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="first day included: today, yesterday, Nd (the last N days) or YYYY-MM-DD")
        parser.add_argument("--until", help="last day included: today, yesterday or YYYY-MM-DD")
        parser.add_argument("--days", type=int, help="the last N calendar days, today included (instead of --since)")
        parser.add_argument("--tz", help="the time zone of the calendar days (default TIME_ZONE), e.g. Europe/Paris")
        parser.add_argument(
            "--by", default="model",
            help=f"one grouping, or two joined by a comma (day,model), of {', '.join(reports.GROUPS)} (default model)",
        )
        parser.add_argument("--format", default="table", choices=FORMATS, help="output format (default table)")
        views = parser.add_mutually_exclusive_group()
        views.add_argument(
            "--reconcile", action="store_true",
            help="compare our cost with the upstream's reported cost per model; list those more than 1%% apart",
        )
        views.add_argument(
            "--abandonment", action="store_true",
            help="abandonment by time-to-first-token bucket, by phase and by reason",
        )
        views.add_argument("--savings", action="store_true", help="estimated savings from replies cut short, per model")

    def handle(self, *args, since, until, days, tz, by, format, reconcile, abandonment, savings, **options):
        try:
            zone = periods.zone(tz) if tz else timezone.get_current_timezone()
            with timezone.override(zone):
                start, end = periods.period(since=since, until=until, days=days)
                self.report(by, start, end, format, reconcile, abandonment, savings)
        except ValueError as e:
            raise CommandError(str(e)) from None

    def report(self, by, start, end, format, reconcile, by_wait, saved):
        """Write the report that the flags ask for."""
        if reconcile:
            return self.write_reconciliation(reports.reconcile(start, end), format)
        if by_wait:
            return self.write(abandonment.by_first_token_wait(start, end), abandonment.COLUMNS, format)
        if saved:
            rows = savings.savings(start, end)
            self.write(rows, [*savings.COLUMNS, "note"] if format != "table" else savings.COLUMNS, format)
            if format == "table":
                self.write_notes(rows)
            return
        names = reports.dimensions(by)
        rows, total = reports.usage_report(names, start, end, with_total=format == "table")
        if format == "table":
            return self.write(rows, [",".join(names), *reports.COLUMNS[1:]], format, total)
        self.write(rows, [*reports.COLUMNS, *names], format)

    def write(self, rows, columns, format, total=None):
        """Write rows as JSON, CSV or an aligned table (whose first column is the rows' `group` or first key)."""
        if format == "json":
            return self.stdout.write(json.dumps(rows, indent=2))
        if format == "csv":
            writer = csv.DictWriter(self.stdout, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            return writer.writerows(rows)
        if not rows:
            return self.stdout.write("No usage records in this period.")
        keys = ["group" if "group" in rows[0] else columns[0], *columns[1:]]
        lines = [columns] + [[show(r[k]) for k in keys] for r in rows] + ([[show(total[k]) for k in keys]] if total else [])
        widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
        for n, line in enumerate(lines):
            if total and n == len(lines) - 1:
                self.stdout.write("  ".join("-" * w for w in widths))
            cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
            self.stdout.write("  ".join(cells).rstrip())

    def write_notes(self, rows):
        """Write how the savings were estimated, and one billing note per provider."""
        self.stdout.write("")
        self.stdout.write(savings.METHOD)
        for note in sorted({row["note"] for row in rows}):
            self.stdout.write(f"- {note}")

    def write_reconciliation(self, rows, format):
        """Write every model's two costs (JSON, CSV), or as a table only the models more than 1 % apart."""
        if format != "table":
            return self.write(rows, [*reports.RECONCILE_COLUMNS, "differs"], format)
        apart = [r for r in rows if r["differs"]]
        self.stdout.write(
            f"{len(rows)} models with an upstream-reported cost; {len(apart)} differ from ours by more than 1 %."
        )
        for r in apart:
            self.stdout.write(
                f"  {r['model']}: ours {r['cost_usd']}, upstream {r['upstream_cost_usd']} "
                f"({r['difference_pct'] or 'n/a'} %) over {r['requests']} requests"
            )


def show(value):
    """Return a cell's display string: rates as percentages, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2%}"
    return str(value)
