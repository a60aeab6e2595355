"""The figures behind the admin's billing dashboard, each aggregated in the database, each with its table."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from billing import abandonment, periods, reports, rollup, savings
from billing.models import Refusal, UsageRecord

TTFT_EDGES = rollup.TTFT_EDGES  # the time-to-first-token bins, in ms: [edge, next edge)
TTFT_BINS = [f"{a / 1000:g}-{b / 1000:g} s" for a, b in zip(TTFT_EDGES, TTFT_EDGES[1:])] + [f"{TTFT_EDGES[-1] / 1000:g} s+"]
TOP_PEOPLE = 10
HEX = re.compile(r"[0-9a-f]+")
LEFT = ("before_first_token", "streaming", "stop", "disconnect")


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
            prefix = self.person.removeprefix("visitor:")
            records = records.filter(user=None, visitor__startswith=prefix)
            if HEX.fullmatch(prefix):
                # The same rows as a range of the (user, visitor, …) index, which LIKE cannot use in every collation.
                records = records.filter(visitor__gte=prefix, visitor__lt=prefix + "g")
        elif self.person:
            User = get_user_model()
            # By id: the planner then reads the (user, started) index, not every record joined to its user.
            user = User.objects.filter(**{User.USERNAME_FIELD: self.person}).values_list("pk", flat=True).first()
            records = records.filter(user_id=user) if user is not None else records.none()
        return records


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


def percentiles(records, sums):
    """Return {model: (ttft p50, ttft p95, median completion tokens of completed replies)}, exact (nearest rank).

    The summed histograms say where each lies; one indexed query per percentile reads its value (see rollup).
    """
    found = {}
    for (model, measure), histogram in rollup.histograms(sums).items():
        values = found.setdefault(model, [None, None, None])
        if measure == "ttft":
            values[0] = rollup.percentile(records, model, measure, histogram, 50)
            values[1] = rollup.percentile(records, model, measure, histogram, 95)
        else:
            values[2] = rollup.percentile(records, model, measure, histogram, 50)
    return {model: tuple(values) for model, values in found.items()}


def bin_position(ms):
    """Return where `ms` falls on the bin axis, as a float bin index."""
    if ms is None:
        return None
    for i, (low, high) in enumerate(zip(TTFT_EDGES, TTFT_EDGES[1:])):
        if ms < high:
            return i + (ms - low) / (high - low)
    return len(TTFT_EDGES) - 0.5


def top_people(sums, limit=TOP_PEOPLE):
    """Return the people who cost most: signed-in users by id, visitors by session, `limit` of them."""
    people = sorted(rollup.by_person(sums).items(), key=lambda item: -item[1][1])
    users = [item for item in people if item[0][0] is not None]
    top = users[:limit] + [item for item in people if item[0][0] is None][:limit]
    User = get_user_model()
    ids = [user for (user, _), _ in top]
    names = dict(User.objects.filter(pk__in=[i for i in ids if i is not None]).values_list("pk", User.USERNAME_FIELD))
    rows = [
        {"who": reports.who(user, visitor, names), "requests": n, "cost": reports.as_cost(cost)}
        for (user, visitor), (n, cost) in top
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
            # The GROUP BYs that sum past days into the roll-up (once) hold up to a million narrow rows: hashed in
            # memory, not spilled to disk as with the default 4 MB. SET LOCAL ends with the transaction.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL work_mem = '64MB'")
        return read_figures(filters)


def read_figures(filters):
    """Return every figure the dashboard shows, with its table."""
    records = filters.records()
    sums = rollup.gather(filters)
    groups = sums.groups()
    days, models, cells = daily(filters, groups)
    cost_rows, request_rows, token_rows = daily_tables(days, models, cells)
    found = percentiles(records, sums)
    waits, left, checked = {}, {}, {}
    for g in groups:
        if g["status"] != UsageRecord.Status.FAILED:
            waits[g["bucket"]] = waits.get(g["bucket"], 0) + g["requests"]
            counts = left.setdefault(g["bucket"], dict.fromkeys(("abandoned", *LEFT), 0))
            for name in LEFT:
                counts[name] += g[name]
            counts["abandoned"] += g["before_first_token"] + g["streaming"]
        if g["reconciled"]:
            v = checked.setdefault(g["model"], {"model": g["model"], "requests": 0, "ours": 0, "theirs": 0})
            v["requests"] += g["reconciled"]
            v["ours"] += g["reconciled_cost"]
            v["theirs"] += g["upstream_cost"]
    cut = [{"model": model, "price": price, "completion_tokens": tokens, "n": n}
           for (_, model, price, tokens), n in sums.cuts.items()]
    medians = {model: (p[2],) for model, p in found.items()}
    return {
        "days": days, "models": models, "cost_rows": cost_rows, "request_rows": request_rows,
        "token_rows": token_rows, "ttft_rows": ttft(groups, found), "ttft_bins": TTFT_BINS,
        "abandonment_rows": abandonment.rows(waits, left),
        "people_rows": top_people(sums),
        "savings_rows": savings.savings(records=records, medians=medians, cut=cut),
        "savings_method": savings.METHOD, "reconcile_rows": reports.reconcile_rows(checked.values()),
        "refusals": refusals(filters),
        "total_cost": sum((row["total"] for row in cost_rows), reports.as_cost(0)),
        "total_requests": sum(row["requests"] for row in request_rows),
    }
