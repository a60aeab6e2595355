"""Usage totals grouped by one or two of model, day, user, status, channel and API key, aggregated in the database."""

import math
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Aggregate, BigIntegerField, CharField, Count, F, Func, IntegerField, Q, Sum
from django.db.models.functions import Substr, TruncDate
from django.utils import timezone

from billing.models import COST_PLACES, AbandonmentEvent, UsageRecord

GROUPS = ("model", "day", "user", "status", "channel", "key")
COLUMNS = [
    "group", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "unpriced",
    "abandoned", "abandonment_rate", "ttft_p50_ms", "ttft_p95_ms",
    "abandoned_before_first_token", "abandoned_streaming",
]
COST_UNITS = 10**10  # cost_usd has 10 decimal places
PHASES = {"abandoned_before_first_token": "before_first_token", "abandoned_streaming": "streaming"}


class CostUnits(Func):
    """Return a cost as a whole number of 1e-10 dollars, so SQLite (which keeps REALs) sums it exactly."""

    template = f"CAST(ROUND(%(expressions)s * {COST_UNITS}) AS INTEGER)"
    output_field = BigIntegerField()


class PercentileDisc(Aggregate):
    """PostgreSQL's percentile_disc: the smallest value with at least `fraction` of the values at or below it.

    That is the nearest rank, as `nearest_rank` computes it from a histogram on other databases.
    """

    function = "percentile_disc"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = IntegerField()


def percentiles_by(records, group, field, *ps):
    """Return {group value: (the p-th percentile of `field`, for each p)} by nearest rank, in the database."""
    if connection.vendor == "postgresql":
        found = records.values(group).annotate(**{f"p{p}": PercentileDisc(field, fraction=p / 100) for p in ps})
        return {v[group]: tuple(v[f"p{p}"] for p in ps) for v in found}
    histograms = {}
    for v in records.values(group, field).annotate(n=Count("id")):
        histograms.setdefault(v[group], {})[v[field]] = v["n"]
    return {key: tuple(nearest_rank(h, p) for p in ps) for key, h in histograms.items()}


def dimensions(by):
    """Return the one or two groupings `by` names ("day,model" or a list), or raise ValueError."""
    names = [name.strip() for name in by.split(",")] if isinstance(by, str) else list(by)
    if not 1 <= len(names) <= 2 or len(set(names)) != len(names) or not set(names) <= set(GROUPS):
        raise ValueError(f"--by takes one or two different groupings of {', '.join(GROUPS)}; got {by!r}.")
    return names


def started_between(start=None, end=None, prefix=""):
    """Return the filter for records that started in [start, end); `prefix` reaches the record from a relation."""
    bounds = {prefix + "started__gte": start, prefix + "started__lt": end}
    return {lookup: value for lookup, value in bounds.items() if value is not None}


def records_between(start=None, end=None):
    """Return the usage records that started in [start, end), unordered."""
    return UsageRecord.objects.order_by().filter(**started_between(start, end))


def day_of(field):
    """Return the calendar day of a datetime field in the current time zone."""
    if connection.vendor == "sqlite" and timezone.get_current_timezone_name() == "UTC":
        # SQLite keeps UTC datetimes as ISO text: the first ten characters are the day, no function call per row.
        return Substr(field, 1, 10, output_field=CharField())
    return TruncDate(field, tzinfo=timezone.get_current_timezone())


def group_keys(by, prefix=""):
    """Return {alias: expression} naming a record's group for each grouping; `prefix` reaches the record."""
    keys = {}
    for name in dimensions(by):
        if name == "day":
            keys["g_day"] = day_of(prefix + "started")
        elif name == "user":
            # Group along the (user, visitor) index; visitors sharing their first 8 characters merge afterwards.
            keys["g_user"], keys["g_session"] = F(prefix + "user_id"), F(prefix + "visitor")
        elif name == "key":
            keys["g_key"] = F(prefix + "api_key_id")
        else:
            keys[f"g_{name}"] = F(prefix + name)
    return keys


def cost_sum(field="cost_usd", filter=None):
    """Return an exact sum of a cost field: numeric on PostgreSQL, integer 1e-10 units elsewhere."""
    if connection.vendor == "postgresql":
        return Sum(field, filter=filter)
    return Sum(CostUnits(field), filter=filter)


def sums():
    """Return the aggregates of a report row that add up across groups."""
    return {
        "requests": Count("id"),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "cost": cost_sum(),
        "unpriced": Count("id", filter=Q(cost_usd=None)),
    }


def abandonment_counts():
    """Return the aggregates of abandonment events: all of them, and each phase apart."""
    counts = {"abandoned": Count("id")}
    for column, phase in PHASES.items():
        counts[column] = Count("id", filter=Q(phase=phase))
    return counts


def record_abandonment_counts():
    """Return the aggregates of usage records that count their abandonment events, in all and by phase."""
    counts = {"abandoned": Count("abandonment")}
    for column, phase in PHASES.items():
        counts[column] = Count("abandonment", filter=Q(abandonment__phase=phase))
    return counts


def usage_report(by="model", start=None, end=None, with_total=False):
    """Return (rows, total row or None): requests, tokens, cost, abandonment and time to first token per group."""
    names = dimensions(by)
    keys = group_keys(names)
    records = records_between(start, end)
    found = list(records.annotate(**keys).values(*keys).annotate(**sums()))  # no ORDER BY: sorted below
    namer = group_namer(names, found)
    groups = {}
    for values in found:
        merge(groups.setdefault(namer(values), {}), values)
    events = AbandonmentEvent.objects.order_by().filter(**started_between(start, end, "record__"))
    for values in events.annotate(**group_keys(names, "record__")).values(*keys).annotate(**abandonment_counts()):
        merge(groups.setdefault(namer(values), {}), values)
    # Percentiles come from each group's histogram of ttft_ms (a count per distinct millisecond value),
    # counted by the database: exact, and far fewer rows than records.
    timed = records.filter(ttft_ms__isnull=False).annotate(**keys).values(*keys, "ttft_ms")
    for values in timed.annotate(n=Count("id")):
        histogram = groups.setdefault(namer(values), {}).setdefault("histogram", {})
        histogram[values["ttft_ms"]] = histogram.get(values["ttft_ms"], 0) + values["n"]
    rows = [
        {**row(" / ".join(group), figures), **dict(zip(names, group))}
        for group, figures in sorted(groups.items(), key=lambda item: [str(part) for part in item[0]])
    ]
    if not with_total or not rows:
        return rows, None
    total = {}
    for figures in groups.values():
        merge(total, figures)
    return rows, row("TOTAL", total)


ADDED = ("requests", "prompt_tokens", "completion_tokens", "cost", "unpriced", "abandoned", *PHASES)


def merge(into, values):
    """Add one group's aggregates (sums, abandonment counts, ttft histogram) into an accumulator."""
    for field in ADDED:
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


def group_namer(names, found):
    """Return a function naming a group as a tuple, one name per grouping (users by username)."""
    usernames = {}
    if "user" in names:
        User = get_user_model()
        ids = {values["g_user"] for values in found if values["g_user"] is not None}
        usernames = dict(User.objects.filter(pk__in=ids).values_list("pk", User.USERNAME_FIELD))
    key_names = {}
    if "key" in names:
        from gateway.models import ApiKey

        ids = {values["g_key"] for values in found if values["g_key"] is not None}
        key_names = dict(ApiKey.objects.filter(pk__in=ids).values_list("pk", "name"))

    def name_one(name, values):
        if name == "day":
            return str(values["g_day"])[:10]
        if name == "user":
            return who(values["g_user"], values["g_session"], usernames)
        if name == "key":
            key = values["g_key"]
            return "(no key)" if key is None else key_names.get(key, f"key:{key}")
        return values[f"g_{name}"]

    return lambda values: tuple(name_one(name, values) for name in names)


def who(user_id, visitor, usernames):
    """Return a person's name in reports: a username, `user:<id>` when gone, or `visitor:<8 hex digits>`."""
    if user_id is None:
        return f"visitor:{(visitor or '')[:8]}"
    return usernames.get(user_id, f"user:{user_id}")


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
        **{column: group.get(column, 0) for column in PHASES},
    }


RECONCILE_COLUMNS = ["model", "requests", "cost_usd", "upstream_cost_usd", "difference_pct"]


def reconcile(start=None, end=None, tolerance=Decimal("0.01"), records=None):
    """Return, per model, our cost and the upstream's over the records where the upstream reported one.

    Each row says whether the two differ by more than `tolerance` (1 %) of the upstream's figure.
    """
    records = records if records is not None else records_between(start, end)
    records = records.order_by().filter(upstream_cost_usd__isnull=False, cost_usd__isnull=False)
    found = records.values("model").annotate(
        requests=Count("id"), ours=cost_sum(), theirs=cost_sum("upstream_cost_usd")
    ).order_by("model")
    return reconcile_rows(found, tolerance)


def reconcile_rows(found, tolerance=Decimal("0.01")):
    """Return the reconciliation rows from [{"model", "requests", "ours", "theirs"}], sorted by model."""
    rows = []
    for values in sorted(found, key=lambda v: v["model"]):
        ours, theirs = as_cost(values["ours"]), as_cost(values["theirs"])
        difference = (ours - theirs) / theirs if theirs else (Decimal(0) if ours == theirs else None)
        rows.append({
            "model": values["model"], "requests": values["requests"],
            "cost_usd": f"{ours:.10f}", "upstream_cost_usd": f"{theirs:.10f}",
            "difference_pct": None if difference is None else f"{difference * 100:.2f}",
            "differs": difference is None or abs(difference) > tolerance,
        })
    return rows
