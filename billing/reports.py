"""Usage totals grouped by model, day, user or status, aggregated in the database."""

import math
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.db import connection
from django.contrib.auth import get_user_model
from django.db.models import BigIntegerField, CharField, Count, F, Func, Q, Sum
from django.db.models.functions import Substr, TruncDate
from django.utils import timezone

from billing.models import COST_PLACES, AbandonmentEvent, UsageRecord

GROUPS = ("model", "day", "user", "status")
COLUMNS = [
    "group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "unpriced",
    "abandoned", "abandonment_rate", "ttft_p50_ms", "ttft_p95_ms",
]
COST_UNITS = 10**10  # cost_usd has 10 decimal places


class CostUnits(Func):
    """Return a cost as a whole number of 1e-10 dollars, so SQLite (which keeps REALs) sums it exactly."""

    template = f"CAST(ROUND(%(expressions)s * {COST_UNITS}) AS INTEGER)"
    output_field = BigIntegerField()


def parse_day(value, flag):
    """Return the date in a YYYY-MM-DD string, or raise ValueError naming the flag."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be a date like 2025-06-30; got {value!r}.") from None


def period(since=None, until=None, days=None, now=None):
    """Return the [start, end) datetimes for --since/--until (inclusive days) or --days N; None is open."""
    if days is not None and (since or until):
        raise ValueError("Use either --days or --since/--until, not both.")
    tz = timezone.get_current_timezone()
    if days is not None:
        if days < 1:
            raise ValueError(f"--days must be at least 1; got {days}.")
        end = now or timezone.now()
        return end - timedelta(days=days), end
    start = end = None
    if since:
        start = datetime.combine(parse_day(since, "--since"), time.min, tz)
    if until:
        end = datetime.combine(parse_day(until, "--until") + timedelta(days=1), time.min, tz)
    if start and end and start >= end:
        raise ValueError(f"--since {since} is after --until {until}.")
    return start, end


def started_between(start=None, end=None, prefix=""):
    """Return the filter for records that started in [start, end); `prefix` reaches the record from a relation."""
    bounds = {prefix + "started__gte": start, prefix + "started__lt": end}
    return {lookup: value for lookup, value in bounds.items() if value is not None}


def records_between(start=None, end=None):
    """Return the usage records that started in [start, end), unordered."""
    return UsageRecord.objects.order_by().filter(**started_between(start, end))


def group_keys(by, prefix=""):
    """Return {alias: expression} naming a record's group for `by`; `prefix` reaches the record from a relation."""
    if by in ("model", "status"):
        return {"key": F(prefix + by)}
    if by == "day":
        if connection.vendor == "sqlite" and timezone.get_current_timezone_name() == "UTC":
            # SQLite keeps UTC datetimes as ISO text: the first ten characters are the day, no function call per row.
            return {"key": Substr(prefix + "started", 1, 10, output_field=CharField())}
        return {"key": TruncDate(prefix + "started")}
    if by == "user":
        # Group along the (user, session_key) index; sessions sharing their first 8 characters merge afterwards.
        return {"key": F(prefix + "user_id"), "session": F(prefix + "session_key")}
    raise ValueError(f"--by must be one of {', '.join(GROUPS)}; got {by!r}.")


def cost_sum(field="cost_usd"):
    """Return an exact sum of a cost field: numeric on PostgreSQL, integer 1e-10 units elsewhere."""
    if connection.vendor == "postgresql":
        return Sum(field)
    return Sum(CostUnits(field))


def sums():
    """Return the aggregates of a report row that add up across groups."""
    return {
        "requests": Count("id"),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "cost": cost_sum(),
        "unpriced": Count("id", filter=Q(cost_usd=None)),
    }


def usage_report(by="model", start=None, end=None, with_total=False):
    """Return (rows, total row or None): requests, tokens, cost, abandonment and time to first token per group."""
    keys = group_keys(by)
    records = records_between(start, end)
    grouped = records.annotate(**keys).values(*keys)  # no ORDER BY: rows are sorted by name below
    found = list(grouped.annotate(**sums()))
    name = group_namer(by, found)
    groups = {}
    for values in found:
        merge(groups.setdefault(name(values), {}), values)
    events = AbandonmentEvent.objects.filter(**started_between(start, end, "record__"))
    abandoned = events.annotate(**group_keys(by, "record__"))
    for values in abandoned.values(*keys).annotate(abandoned=Count("id")).order_by():
        merge(groups.setdefault(name(values), {}), values)
    # Percentiles come from each group's histogram of ttft_ms (a count per distinct millisecond value),
    # counted by the database: exact, and far fewer rows than records.
    timed = records.filter(ttft_ms__isnull=False).annotate(**keys).values(*keys, "ttft_ms")
    for values in timed.annotate(n=Count("id")).order_by():
        histogram = groups.setdefault(name(values), {}).setdefault("histogram", {})
        histogram[values["ttft_ms"]] = histogram.get(values["ttft_ms"], 0) + values["n"]
    rows = [row(group, figures) for group, figures in sorted(groups.items(), key=lambda item: str(item[0]))]
    if not with_total or not rows:
        return rows, None
    total = {}
    for figures in groups.values():
        merge(total, figures)
    return rows, row("TOTAL", total)


def merge(into, values):
    """Add one group's aggregates (sums, abandonment count, ttft histogram) into an accumulator."""
    for field in ("requests", "prompt_tokens", "completion_tokens", "cost", "unpriced", "abandoned"):
        if values.get(field) is not None:
            into[field] = into.get(field, 0) + values[field]
    for ms, n in values.get("histogram", {}).items():
        histogram = into.setdefault("histogram", {})
        histogram[ms] = histogram.get(ms, 0) + n


def nearest_rank(histogram, p):
    """Return the smallest value with at least p% of the values at or below it, from {value: count}."""
    if not histogram:
        return None
    rank = math.ceil(sum(histogram.values()) * p / 100)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value


def group_namer(by, groups):
    """Return a function naming a group: usernames for users, `session:<8 chars>` for anonymous visitors."""
    if by == "day":
        return lambda values: str(values["key"])[:10]
    if by != "user":
        return lambda values: values["key"]
    User = get_user_model()
    ids = {values["key"] for values in groups if values["key"] is not None}
    usernames = dict(User.objects.filter(pk__in=ids).values_list("pk", User.USERNAME_FIELD))

    def name(values):
        if values["key"] is None:
            return f"session:{values['session'][:8]}"
        return usernames.get(values["key"], f"user:{values['key']}")
    return name


def as_cost(value):
    """Return a summed cost (Decimal, float or 1e-10 units) as a Decimal with 10 places."""
    if value is None:
        return Decimal(0).quantize(COST_PLACES)
    if isinstance(value, int):
        return Decimal(value).scaleb(-10).quantize(COST_PLACES)
    return Decimal(value).quantize(COST_PLACES)


def row(name, group):
    """Return one report row from a group's aggregates."""
    requests = group.get("requests", 0)
    histogram = group.get("histogram", {})
    return {
        "group": name,
        "requests": requests,
        "prompt_tokens": group.get("prompt_tokens") or 0,
        "completion_tokens": group.get("completion_tokens") or 0,
        "cost_usd": f"{as_cost(group.get('cost')):.10f}",
        "unpriced": group.get("unpriced", 0),
        "abandoned": group.get("abandoned", 0),
        "abandonment_rate": round(group.get("abandoned", 0) / requests, 4) if requests else 0.0,
        "ttft_p50_ms": nearest_rank(histogram, 50),
        "ttft_p95_ms": nearest_rank(histogram, 95),
    }


RECONCILE_COLUMNS = ["model", "requests", "cost_usd", "upstream_cost_usd", "difference_pct"]


def reconcile(start=None, end=None, tolerance=Decimal("0.01")):
    """Return, per model, our cost and the upstream's over the records where the upstream reported one.

    Each row says whether the two differ by more than `tolerance` (1 %) of the upstream's figure.
    """
    records = records_between(start, end).filter(upstream_cost_usd__isnull=False, cost_usd__isnull=False)
    found = records.values("model").annotate(
        requests=Count("id"), ours=cost_sum(), theirs=cost_sum("upstream_cost_usd")
    ).order_by("model")
    rows = []
    for values in found:
        ours, theirs = as_cost(values["ours"]), as_cost(values["theirs"])
        difference = (ours - theirs) / theirs if theirs else (Decimal(0) if ours == theirs else None)
        rows.append({
            "model": values["model"], "requests": values["requests"],
            "cost_usd": f"{ours:.10f}", "upstream_cost_usd": f"{theirs:.10f}",
            "difference_pct": None if difference is None else f"{difference * 100:.2f}",
            "differs": difference is None or abs(difference) > tolerance,
        })
    return rows
