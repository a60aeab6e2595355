"""Daily roll-ups of the usage records: whole past days summed once, in the database, the rest read live.

The dashboard sums a period's records per (day, model, status, time-to-first-token bin, wait bucket), per
(day, model, person) and per (day, model, histogram bucket). For a day that ended more than GRACE ago in the
current time zone those sums are read from the roll-up tables (billing.models.Rollup*), computed the first
time the day is asked for; the days after it are summed from the records at each request.

A roll-up never goes stale unnoticed: database triggers (migration 0009) mark a day stale whenever any
statement inserts, updates or deletes a record or an abandonment event that started in it (the relay's late
writes, `seed_usage --clear`, an admin delete, a user deleted and their records set to null, a data
migration, raw SQL, TRUNCATE), and a stale day is summed again before it is read.

Percentiles cannot be added up from daily sums: the roll-up keeps a histogram of each measure (buckets of
HISTOGRAM_WIDTHS, 2-10 % wide), which says in which bucket the nearest-rank value lies and at which rank
inside it; one indexed query over that bucket's records then reads the exact value. The percentiles are exact.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from datetime import timezone as dt_timezone

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, IntegerField, Q, Sum, Value, When
from django.utils import timezone

from billing import abandonment, periods, reports
from billing.models import (
    AbandonmentEvent, RollupCell, RollupCut, RollupSpan, RollupHistogram, RollupPerson, UsageRecord,
)

# A day is rolled up once it ended this long ago: a reply is recorded when it ends, under the day it started.
GRACE = timedelta(hours=1)
HOUR = timedelta(hours=1)
# Histogram buckets: below each limit, buckets this wide; each limit is a multiple of the next width.
HISTOGRAM_WIDTHS = [(200, 10), (500, 20), (1000, 50), (2000, 100), (5000, 200), (10_000, 500), (20_000, 1000),
                    (50_000, 2000), (100_000, 5000)]
TOP_WIDTH = 10_000
# The measures whose percentiles the dashboard shows: the records each counts, and the field.
MEASURES = {
    "ttft": (Q(ttft_ms__isnull=False), "ttft_ms"),
    "reply": (Q(status=UsageRecord.Status.COMPLETED), "completion_tokens"),
}
# The dashboard's time-to-first-token bins, in ms: [edge, next edge).
TTFT_EDGES = [0, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000]
CUT_SHORT = (UsageRecord.Status.STOPPED, UsageRecord.Status.DISCONNECTED)
CELL_KEYS = ("day", "model", "status", "bin", "bucket")
CELL_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost", "before_first_token", "streaming", "stop",
             "disconnect", "reconciled", "reconciled_cost", "upstream_cost")


def width(value):
    """Return the width of the histogram bucket that holds `value`."""
    for limit, w in HISTOGRAM_WIDTHS:
        if value < limit:
            return w
    return TOP_WIDTH


def histogram_low(name):
    """Return the first value of the histogram bucket of a record's `name` field, computed in the database."""
    whens = [When(**{f"{name}__lt": limit}, then=F(name) / Value(w) * Value(w)) for limit, w in HISTOGRAM_WIDTHS]
    return Case(*whens, default=F(name) / Value(TOP_WIDTH) * Value(TOP_WIDTH), output_field=IntegerField())


def units(value):
    """Return a summed cost (Decimal on PostgreSQL, 1e-10 units elsewhere, or None) in 1e-10 dollar units."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(value.scaleb(10))  # cost_usd has 10 decimal places: exact


@dataclass
class Sums:
    """A set of records summed: cells by CELL_KEYS, people by (user id, visitor), histograms by (model, measure)."""

    cells: dict = field(default_factory=dict)
    people: dict = field(default_factory=dict)
    histograms: dict = field(default_factory=dict)
    cuts: dict = field(default_factory=dict)

    def add_cell(self, key, values):
        cell = self.cells.setdefault(key, dict.fromkeys(CELL_SUMS, 0))
        for name in CELL_SUMS:
            cell[name] += values.get(name) or 0

    def add_person(self, key, requests, cost):
        person = self.people.setdefault(key, [0, 0])
        person[0] += requests
        person[1] += cost

    def add_bucket(self, model, measure, low, n):
        histogram = self.histograms.setdefault((model, measure), {})
        histogram[low] = histogram.get(low, 0) + n

    def add_cut(self, key, n):
        self.cuts[key] = self.cuts.get(key, 0) + n

    def groups(self):
        """Return the cells as rows: the CELL_KEYS and CELL_SUMS of each, costs in 1e-10 units (see reports.as_cost)."""
        return [dict(zip(CELL_KEYS, key), **values) for key, values in self.cells.items()]


def day_key(value):
    return str(value)[:10]


def summed(records):
    """Return the Sums of `records` (a queryset) per day in the current time zone, from six grouped queries."""
    sums = Sums()
    day = {"day": reports.day_of("started")}
    with_costs = Q(upstream_cost_usd__isnull=False, cost_usd__isnull=False)
    scan = records.annotate(**day, bin=ttft_bin(), bucket=abandonment.wait_bucket()).values(
        "day", "model", "status", "bin", "bucket",
    ).annotate(
        requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        cost=reports.cost_sum(), reconciled=Count("id", filter=with_costs),
        reconciled_cost=reports.cost_sum(filter=with_costs),
        upstream_cost=reports.cost_sum("upstream_cost_usd", filter=with_costs),
    )
    events = AbandonmentEvent.objects.order_by().filter(record__in=records.values("pk")).annotate(
        day=reports.day_of("record__started"), model=F("record__model"),
        status=F("record__status"), bin=ttft_bin("record__"), bucket=abandonment.wait_bucket("record__"),
    ).values("day", "model", "status", "bin", "bucket").annotate(
        before_first_token=Count("id", filter=Q(phase=AbandonmentEvent.Phase.BEFORE_FIRST_TOKEN)),
        streaming=Count("id", filter=Q(phase=AbandonmentEvent.Phase.STREAMING)),
        stop=Count("id", filter=Q(reason=AbandonmentEvent.Reason.STOP)),
        disconnect=Count("id", filter=Q(reason=AbandonmentEvent.Reason.DISCONNECT)),
    )
    for found in (scan, events):
        for v in found:
            key = (day_key(v["day"]), v["model"], v["status"], v["bin"], v["bucket"])
            sums.add_cell(key, {name: units(v[name]) if "cost" in name else v[name] for name in CELL_SUMS if name in v})
    people = records.annotate(**day).values("day", "model", "user_id", "visitor").annotate(
        requests=Count("id"), cost=reports.cost_sum(),
    )
    for v in people:
        sums.add_person((day_key(v["day"]), v["model"], v["user_id"], v["visitor"]),
                        v["requests"], units(v["cost"]))
    for measure, (counted, name) in MEASURES.items():
        found = records.filter(counted).annotate(**day, low=histogram_low(name)).values("day", "model", "low")
        for v in found.annotate(n=Count("id")):
            key = (day_key(v["day"]), v["model"])
            sums.histograms.setdefault(key + (measure,), {})[v["low"]] = v["n"]
    cut = records.filter(status__in=CUT_SHORT).annotate(**day).values("day", "model", "price_id", "completion_tokens")
    for v in cut.annotate(n=Count("id")):
        sums.add_cut((day_key(v["day"]), v["model"], v["price_id"], v["completion_tokens"]), v["n"])
    return sums


def ttft_bin(prefix=""):
    """Return a record's time-to-first-token bin on the dashboard's axis (null with no first token)."""
    name = prefix + "ttft_ms"
    whens = [When(**{f"{name}__isnull": True}, then=Value(None))]
    whens += [When(**{f"{name}__lt": edge}, then=Value(i - 1)) for i, edge in enumerate(TTFT_EDGES) if i]
    return Case(*whens, default=Value(len(TTFT_EDGES) - 1), output_field=IntegerField())


def closed_spans(start, end, now=None, tz=None):
    """Return the closed spans that tile [start, end) from its start: [(day, starts, ends)], oldest first.

    A span is closed once it ended GRACE ago: each whole day that did, then each hour of the next day that did.
    The rest of the period, from the last span's end (at most GRACE plus an hour), is read live.
    """
    tz = tz or timezone.get_current_timezone()
    limit = (now or timezone.now()) - GRACE
    spans = []
    for day in periods.days_between(start, end, tz):
        starts, ends = periods.midnight(day, tz), periods.midnight(day + timedelta(days=1), tz)
        if ends <= limit:
            spans.append((day, starts, ends))
            continue
        at = starts.astimezone(dt_timezone.utc)  # hours of absolute time (wall-clock arithmetic would skip DST)
        while at < ends and min(at + HOUR, ends) <= limit:
            spans.append((day, at, min(at + HOUR, ends)))
            at += HOUR
        break
    return spans


def ensure(spans, tz=None):
    """Return the ids of the roll-up rows of `spans` (from closed_spans), summing missing and stale ones first."""
    if not spans:
        return []
    name = str(tz or timezone.get_current_timezone())
    found = RollupSpan.objects.filter(time_zone=name, starts__gte=spans[0][1], ends__lte=spans[-1][2])
    have = {(s.starts, s.ends): s for s in found}
    todo = [span for span in spans if (span[1], span[2]) not in have or have[span[1], span[2]].stale]
    for run in runs(todo):
        compute(run, name)
    found = RollupSpan.objects.filter(time_zone=name, starts__gte=spans[0][1], ends__lte=spans[-1][2])
    wanted = {(starts, ends) for _, starts, ends in spans}
    return [pk for pk, starts, ends in found.values_list("pk", "starts", "ends") if (starts, ends) in wanted]


def runs(spans):
    """Return `spans` as lists summed together: consecutive whole days, and each hour alone."""
    out = []
    for span in spans:
        whole_day = span[2] - span[1] > HOUR * 2
        if whole_day and out and out[-1][-1][2] == span[1] and out[-1][-1][2] - out[-1][-1][1] > HOUR * 2:
            out[-1].append(span)
        else:
            out.append([span])
    return out


def compute(spans, name):
    """Sum the records of consecutive days, or of one hour, into the roll-up tables, replacing what was there."""
    start, end = spans[0][1], spans[-1][2]
    try:
        with transaction.atomic():
            if spans[-1][2] - spans[0][1] > HOUR * 2:  # whole days: their hours go too
                RollupSpan.objects.filter(time_zone=name, day__in=[day for day, _, _ in spans]).delete()
            else:
                RollupSpan.objects.filter(time_zone=name, starts=start, ends=end).delete()
            # The span rows go first: from here on the triggers mark them stale if a record of theirs changes.
            made = RollupSpan.objects.bulk_create([
                RollupSpan(time_zone=name, day=day, starts=starts, ends=ends) for day, starts, ends in spans
            ])
            made = {str(span.day): span for span in made}
            sums = summed(reports.records_between(start, end))
            RollupCell.objects.bulk_create([
                RollupCell(
                    span=made[day], model=model, status=status, ttft_bin=bin, wait_bucket=bucket,
                    requests=v["requests"], prompt_tokens=v["prompt_tokens"], completion_tokens=v["completion_tokens"],
                    cost_units=v["cost"], before_first_token=v["before_first_token"], streaming=v["streaming"],
                    stop=v["stop"], disconnect=v["disconnect"], reconciled=v["reconciled"],
                    reconciled_units=v["reconciled_cost"], upstream_units=v["upstream_cost"],
                )
                for (day, model, status, bin, bucket), v in sums.cells.items()
            ], batch_size=2000)
            everyone = Sums()  # each person's records of every model, read when no model is chosen
            for (day, _, user, visitor), (n, cost) in sums.people.items():
                everyone.add_person((day, None, user, visitor), n, cost)
            RollupPerson.objects.bulk_create([
                RollupPerson(span=made[day], model=model, user_id=user, visitor=visitor, requests=n, cost_units=cost)
                for (day, model, user, visitor), (n, cost) in (sums.people | everyone.people).items()
            ], batch_size=2000)
            RollupHistogram.objects.bulk_create([
                RollupHistogram(span=made[day], model=model, measure=measure, low=low, n=n)
                for (day, model, measure), histogram in sums.histograms.items() for low, n in histogram.items()
            ], batch_size=2000)
            RollupCut.objects.bulk_create([
                RollupCut(span=made[day], model=model, price_id=price, completion_tokens=tokens, n=n)
                for (day, model, price, tokens), n in sums.cuts.items()
            ], batch_size=2000)
    except IntegrityError:
        pass  # another request summed these spans at the same time: theirs are read instead


def gather(filters, now=None):
    """Return the Sums of the records `filters` select: closed days and hours from the roll-up, the rest live.

    A person filter reads that person's records live (the roll-up is not kept per person and status).
    """
    tz = timezone.get_current_timezone()
    records = filters.records()
    if filters.person:
        return summed(records)
    spans = closed_spans(filters.start, filters.end, now, tz)
    cut = spans[-1][2] if spans else filters.start
    sums = summed(records.filter(started__gte=cut)) if cut < filters.end else Sums()
    ids = ensure(spans, tz)
    if not ids:
        return sums
    models = {"model": filters.model} if filters.model else {}
    cells = RollupCell.objects.filter(span__in=ids, **models).values_list(
        "span__day", "model", "status", "ttft_bin", "wait_bucket", "requests", "prompt_tokens", "completion_tokens",
        "cost_units", "before_first_token", "streaming", "stop", "disconnect", "reconciled", "reconciled_units",
        "upstream_units",
    )
    for day, model, status, bin, bucket, *values in cells:
        sums.add_cell((str(day), model, status, bin, bucket), dict(zip(CELL_SUMS, values)))
    # Without a model filter, the rows of every model (model null): one per person and span.
    people = RollupPerson.objects.filter(span__in=ids, model=filters.model or None).values("user_id", "visitor")
    people = people.annotate(n=Sum("requests"), cost=Sum("cost_units")).order_by()
    for v in people:
        sums.add_person((None, None, v["user_id"], v["visitor"]), v["n"], v["cost"])
    buckets = RollupHistogram.objects.filter(span__in=ids, **models).values("model", "measure", "low").annotate(
        n=Sum("n"),
    ).order_by()
    for v in buckets:
        sums.add_bucket(v["model"], v["measure"], v["low"], v["n"])
    cuts = RollupCut.objects.filter(span__in=ids, **models).values("model", "price_id", "completion_tokens").annotate(
        n=Sum("n"),
    ).order_by()
    for v in cuts:
        sums.add_cut((None, v["model"], v["price_id"], v["completion_tokens"]), v["n"])
    return sums


def by_person(sums):
    """Return {(user id, visitor): [requests, cost units]} over every day and model."""
    people = {}
    for (_, _, user, visitor), (n, cost) in sums.people.items():
        person = people.setdefault((user, visitor), [0, 0])
        person[0] += n
        person[1] += cost
    return people


def histograms(sums):
    """Return {(model, measure): {bucket low: count}} over every day."""
    merged = {}
    for key, histogram in sums.histograms.items():
        model, measure = key[-2], key[-1]
        into = merged.setdefault((model, measure), {})
        for low, n in histogram.items():
            into[low] = into.get(low, 0) + n
    return merged


def percentile(records, model, measure, histogram, p):
    """Return the nearest-rank p-th percentile of a measure of `model`'s records, exactly.

    The histogram (counts per bucket) gives the bucket and the rank inside it; one query reads that value.
    """
    total = sum(histogram.values())
    if not total:
        return None
    rank = -(-total * p // 100)  # ceil, in integers
    seen = 0
    for low in sorted(histogram):
        if seen + histogram[low] >= rank:
            counted, name = MEASURES[measure]
            inside = records.filter(counted, model=model, **{f"{name}__gte": low, f"{name}__lt": low + width(low)})
            return inside.order_by(name).values_list(name, flat=True)[rank - seen - 1]
        seen += histogram[low]
    raise AssertionError(f"rank {rank} beyond the histogram of {total}")
