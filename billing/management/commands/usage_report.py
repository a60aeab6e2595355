import csv
import json

from django.core.management.base import BaseCommand, CommandError

from billing import reports

FORMATS = ("table", "csv", "json")


class Command(BaseCommand):
    help = "Report requests, tokens, cost, abandonment and time to first token, grouped by model, day, user or status."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="first day included, YYYY-MM-DD")
        parser.add_argument("--until", help="last day included, YYYY-MM-DD")
        parser.add_argument("--days", type=int, help="the last N days (instead of --since/--until)")
        parser.add_argument("--by", default="model", choices=reports.GROUPS, help="grouping (default model)")
        parser.add_argument("--format", default="table", choices=FORMATS, help="output format (default table)")
        parser.add_argument(
            "--reconcile", action="store_true",
            help="compare our cost with the upstream's reported cost per model; list those more than 1%% apart",
        )

    def handle(self, *args, since, until, days, by, format, reconcile, **options):
        try:
            start, end = reports.period(since=since, until=until, days=days)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if reconcile:
            return self.write_reconciliation(reports.reconcile(start, end), format)
        rows, total = reports.usage_report(by, start, end, with_total=format == "table")
        if format == "json":
            self.write_json(rows)
        elif format == "csv":
            self.write_csv(rows)
        else:
            self.write_table(by, rows, total)

    def write_reconciliation(self, rows, format):
        """Write every model's two costs (JSON, CSV), or as a table only the models more than 1 % apart."""
        if format == "json":
            return self.stdout.write(json.dumps(rows, indent=2))
        if format == "csv":
            writer = csv.DictWriter(self.stdout, fieldnames=[*reports.RECONCILE_COLUMNS, "differs"], lineterminator="\n")
            writer.writeheader()
            return writer.writerows(rows)
        apart = [r for r in rows if r["differs"]]
        self.stdout.write(
            f"{len(rows)} models with an upstream-reported cost; {len(apart)} differ from ours by more than 1 %."
        )
        for r in apart:
            self.stdout.write(
                f"  {r['model']}: ours {r['cost_usd']}, upstream {r['upstream_cost_usd']} "
                f"({r['difference_pct'] or 'n/a'} %) over {r['requests']} requests"
            )

    def write_json(self, rows):
        """Write the rows as a JSON list (costs are strings, exact to 10 places)."""
        self.stdout.write(json.dumps(rows, indent=2))

    def write_csv(self, rows):
        """Write the rows as CSV with a header line."""
        writer = csv.DictWriter(self.stdout, fieldnames=reports.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    def write_table(self, by, rows, total):
        """Write the rows as an aligned table ending with a TOTAL row."""
        if not rows:
            self.stdout.write("No usage records in this period.")
            return
        header = [by, *reports.COLUMNS[1:]]
        lines = [header] + [table_cells(r) for r in rows] + [table_cells(total)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for n, line in enumerate(lines):
            if n == len(lines) - 1:
                self.stdout.write("  ".join("-" * w for w in widths))
            cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
            self.stdout.write("  ".join(cells).rstrip())


def table_cells(row):
    """Return one row's values as display strings."""
    def show(value):
        return "-" if value is None else str(value)
    return [
        row["group"], show(row["requests"]), show(row["prompt_tokens"]), show(row["completion_tokens"]),
        row["cost_usd"], show(row["unpriced"]), show(row["abandoned"]), f"{row['abandonment_rate']:.2%}",
        show(row["ttft_p50_ms"]), show(row["ttft_p95_ms"]),
    ]
