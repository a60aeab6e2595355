"""Abandonment by time to first token: do people leave because the first token is slow?"""

from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThan

from billing.models import AbandonmentEvent, UsageRecord
from billing.reports import records_between

# (label, lower bound in ms, upper bound in ms or None): the buckets of the wait for a first token.
BUCKETS = [("0-0.5 s", 0, 500), ("0.5-1 s", 500, 1000), ("1-2 s", 1000, 2000), ("2-4 s", 2000, 4000), ("4 s+", 4000, None)]
COLUMNS = [
    "bucket", "requests", "abandoned", "abandonment_rate", "before_first_token", "streaming", "stop", "disconnect",
]


def wait_bucket(prefix=""):
    """Return the bucket index of a record's wait: its time to first token, or else its whole duration.

    A person who left (or was still waiting when the reply ended) before any token waited at least that long,
    so the duration is the wait they saw. `prefix` reaches the record from a relation.
    """
    wait = Coalesce(prefix + "ttft_ms", prefix + "duration_ms")
    whens = [When(GreaterThan(Value(high), wait), then=Value(i)) for i, (_, _, high) in enumerate(BUCKETS) if high]
    return Case(*whens, default=Value(len(BUCKETS) - 1), output_field=IntegerField())


def by_first_token_wait(start=None, end=None, records=None, requests=None):
    """Return one row per bucket: requests, abandoned (by phase and by reason) and the abandonment rate.

    Failed requests are left out: the person did not choose how they ended. Requests are counted over the
    records, abandonment over the events (a few percent of them) joined to their records: no join of every record.
    `requests` ({bucket: count}) saves counting them again when the caller has.
    """
    records = (records if records is not None else records_between(start, end)).order_by().exclude(
        status=UsageRecord.Status.FAILED
    )
    if requests is None:
        counted = records.annotate(bucket=wait_bucket()).values("bucket").annotate(n=Count("id"))
        requests = dict(counted.values_list("bucket", "n"))
    left = {
        "abandoned": Count("id"),
        "before_first_token": Count("id", filter=Q(phase=AbandonmentEvent.Phase.BEFORE_FIRST_TOKEN)),
        "streaming": Count("id", filter=Q(phase=AbandonmentEvent.Phase.STREAMING)),
        "stop": Count("id", filter=Q(reason=AbandonmentEvent.Reason.STOP)),
        "disconnect": Count("id", filter=Q(reason=AbandonmentEvent.Reason.DISCONNECT)),
    }
    events = AbandonmentEvent.objects.order_by().filter(record__in=records.values("pk"))
    found = {v["bucket"]: v for v in events.annotate(bucket=wait_bucket("record__")).values("bucket").annotate(**left)}
    return rows(requests, found)


def rows(requests, found):
    """Return the table's rows from {bucket: requests} and {bucket: {abandoned, before_first_token, streaming,
    stop, disconnect}}."""
    left = ("abandoned", "before_first_token", "streaming", "stop", "disconnect")
    rows = []
    for i, (label, _, _) in enumerate(BUCKETS):
        figures, n = found.get(i, {}), requests.get(i, 0)
        rows.append({
            "bucket": label, "requests": n, **{name: figures.get(name, 0) for name in left},
            "abandonment_rate": round(figures.get("abandoned", 0) / n, 4) if n else 0.0,
        })
    return rows
