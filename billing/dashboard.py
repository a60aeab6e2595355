"""The figures behind the admin's billing dashboard, each aggregated in the database, each with its table."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Case, Count, F, IntegerField, Q, Sum, Value, When
from django.utils import timezone

from billing import abandonment, periods, reports, savings
from billing.models import Refusal, UsageRecord

# Time-to-first-token bins, in ms: [edge, next edge).
TTFT_EDGES = [0, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000]
TTFT_BINS = [f"{a / 1000:g}-{b / 1000:g} s" for a, b in zip(TTFT_EDGES, TTFT_EDGES[1:])] + [f"{TTFT_EDGES[-1] / 1000:g} s+"]
TOP_PEOPLE = 10


@dataclass(frozen=True)
class Filters:
    """What the dashboard shows: whole days [start, end) in the current time zone, one model, one person."""

    start: datetime
    end: datetime
    since: str
    until: str
    model: str = ""
    person: str = ""

    @classmethod
    def from_query(cls, query):
        """Return the filters in a GET query (default: the last 7 days), or raise ValueError saying what is wrong."""
        since, until = query.get("since") or "7d", query.get("until") or "today"
        start, end = periods.period(since=since, until=until)
        if end - start > timedelta(days=400):
            raise ValueError("Choose a period of at most 400 days.")
        return cls(start, end, since, until, (query.get("model") or "").strip(), (query.get("person") or "").strip())

    def records(self):
        """Return the records these filters select, unordered."""
        records = reports.records_between(self.start, self.end)
        if self.model:
            records = records.filter(model=self.model)
        if self.person.startswith("visitor:"):
            records = records.filter(user=None, visitor__startswith=self.person.removeprefix("visitor:"))
        elif self.person:
            records = records.filter(**{f"user__{get_user_model().USERNAME_FIELD}": self.person})
        return records


def ttft_bin():
    """Return a record's time-to-first-token bin index, or null when it had no first token."""
    whens = [When(ttft_ms__isnull=True, then=Value(None))]
    whens += [When(ttft_ms__lt=edge, then=Value(i - 1)) for i, edge in enumerate(TTFT_EDGES) if i]
    return Case(*whens, default=Value(len(TTFT_EDGES) - 1), output_field=IntegerField())


def scan(records):
    """Return the period's figures per (day, model, status, ttft bin, wait bucket), from one pass over its records.

    The groups are few (the bins and buckets go together) and every chart but the percentiles, the people and
    the cut-short replies adds them up differently, so the records are read once for all of them.
    """
    return list(records.annotate(
        day=reports.day_of("started"), bin=ttft_bin(), bucket=abandonment.wait_bucket(),
    ).values("day", "model", "status", "bin", "bucket").annotate(
        requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        cost=reports.cost_sum(),
    ))


def daily(filters, groups):
    """Return (days, models by cost, {(day, model): figures}) from the scanned groups."""
    cells = {}
    for g in groups:
        cell = cells.setdefault((str(g["day"])[:10], g["model"]), {})
        for name in ("requests", "prompt_tokens", "completion_tokens", "cost"):
            cell[name] = cell.get(name, 0) + (g[name] or 0)
    days = [str(day) for day in periods.days_between(filters.start, filters.end, timezone.get_current_timezone())]
    costs = {}
    for (_, model), v in cells.items():
        costs[model] = costs.get(model, 0) + v["cost"]
    models = sorted(costs, key=lambda m: (-costs[m], m))
    return days, models, cells


def daily_tables(days, models, cells):
    """Return the tables of cost per day by model, requests per day and tokens per day."""
    cost_rows, request_rows, token_rows = [], [], []
    for day in days:
        mine = [cells.get((day, model), {}) for model in models]
        costs = [reports.as_cost(v.get("cost")) for v in mine]
        cost_rows.append({"day": day, "costs": costs, "total": sum(costs, reports.as_cost(0))})
        request_rows.append({"day": day, "requests": sum(v.get("requests", 0) for v in mine)})
        token_rows.append({
            "day": day, "prompt_tokens": sum(v.get("prompt_tokens") or 0 for v in mine),
            "completion_tokens": sum(v.get("completion_tokens") or 0 for v in mine),
        })
    return cost_rows, request_rows, token_rows


def ttft(groups, found):
    """Return one row per model: requests with a first token, p50 and p95 in ms, and the count in each bin."""
    counts = {}
    for g in groups:
        if g["bin"] is not None:
            counts.setdefault(g["model"], [0] * len(TTFT_BINS))[g["bin"]] += g["requests"]
    return [
        {"model": model, "requests": sum(counts[model]), "p50": found[model][0], "p95": found[model][1],
         "bins": counts[model]}
        for model in sorted(counts)
    ]


def percentiles(records):
    """Return {model: (ttft p50, ttft p95, median completion tokens of completed replies)}: one query on PostgreSQL."""
    if connection.vendor == "postgresql":
        done = Q(status=UsageRecord.Status.COMPLETED)
        found = records.values("model").annotate(
            p50=reports.PercentileDisc("ttft_ms", fraction=0.5), p95=reports.PercentileDisc("ttft_ms", fraction=0.95),
            median=reports.PercentileDisc("completion_tokens", fraction=0.5, filter=done),
        )
        return {v["model"]: (v["p50"], v["p95"], v["median"]) for v in found}
    ttfts = reports.percentiles_by(records.filter(ttft_ms__isnull=False), "model", "ttft_ms", 50, 95)
    lengths = reports.percentiles_by(records.filter(status=UsageRecord.Status.COMPLETED), "model", "completion_tokens", 50)
    return {m: (*ttfts.get(m, (None, None)), *lengths.get(m, (None,))) for m in set(ttfts) | set(lengths)}


def bin_position(ms):
    """Return where `ms` falls on the bin axis, as a float bin index."""
    if ms is None:
        return None
    for i, (low, high) in enumerate(zip(TTFT_EDGES, TTFT_EDGES[1:])):
        if ms < high:
            return i + (ms - low) / (high - low)
    return len(TTFT_EDGES) - 0.5


def top_people(records, limit=TOP_PEOPLE):
    """Return the people who cost most: signed-in users by id, visitors by session, `limit` of them."""
    order = F("cost").desc(nulls_last=True)
    figures = {"requests": Count("id"), "cost": reports.cost_sum()}
    users = list(records.exclude(user=None).values("user").annotate(**figures).order_by(order)[:limit])
    visitors = list(records.filter(user=None).values("visitor").annotate(**figures).order_by(order)[:limit])
    User = get_user_model()
    names = dict(User.objects.filter(pk__in=[v["user"] for v in users]).values_list("pk", User.USERNAME_FIELD))
    rows = [
        {"who": reports.who(v.get("user"), v.get("visitor"), names), "requests": v["requests"],
         "cost": reports.as_cost(v["cost"])}
        for v in users + visitors
    ]
    return sorted(rows, key=lambda r: (-r["cost"], r["who"]))[:limit]


def refusals(filters):
    """Return {(day, kind): refusals}, oldest first.

    Refusals carry the model asked for, not the person's name: the model filter applies, the person filter does not.
    """
    found = Refusal.objects.order_by().filter(created__gte=filters.start, created__lt=filters.end)
    if filters.model:
        found = found.filter(model=filters.model)
    found = found.annotate(day=reports.day_of("created")).values("day", "kind").annotate(n=Count("id"))
    return dict(sorted(((str(v["day"])[:10], v["kind"]), v["n"]) for v in found))


def figures(filters):
    """Return every figure the dashboard shows, with its table, read in one transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Its GROUP BYs and percentile sorts hold a few hundred thousand narrow rows: sorted in memory, not
            # spilled to disk as with the default 4 MB. SET LOCAL ends with the transaction.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL work_mem = '64MB'")
        return read_figures(filters)


def read_figures(filters):
    """Return every figure the dashboard shows, with its table."""
    records = filters.records()
    groups = scan(records)
    days, models, cells = daily(filters, groups)
    cost_rows, request_rows, token_rows = daily_tables(days, models, cells)
    found = percentiles(records)
    waits = {}
    for g in groups:
        if g["status"] != UsageRecord.Status.FAILED:
            waits[g["bucket"]] = waits.get(g["bucket"], 0) + g["requests"]
    medians = {model: (p[2],) for model, p in found.items()}
    return {
        "days": days, "models": models, "cost_rows": cost_rows, "request_rows": request_rows,
        "token_rows": token_rows, "ttft_rows": ttft(groups, found), "ttft_bins": TTFT_BINS,
        "abandonment_rows": abandonment.by_first_token_wait(records=records, requests=waits),
        "people_rows": top_people(records),
        "savings_rows": savings.savings(records=records, medians=medians),
        "savings_method": savings.METHOD, "reconcile_rows": reports.reconcile(records=records),
        "refusals": refusals(filters),
        "total_cost": sum((row["total"] for row in cost_rows), reports.as_cost(0)),
        "total_requests": sum(row["requests"] for row in request_rows),
    }


