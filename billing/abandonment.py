"""Abandonment by time to first token: do people leave because the first token is slow?"""

from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.db.models.functions import Coalesce

from billing.models import AbandonmentEvent, UsageRecord
from billing.reports import records_between

# (label, lower bound in ms, upper bound in ms or None): the buckets of the wait for a first token.
BUCKETS = [("0-0.5 s", 0, 500), ("0.5-1 s", 500, 1000), ("1-2 s", 1000, 2000), ("2-4 s", 2000, 4000), ("4 s+", 4000, None)]
COLUMNS = [
    "bucket", "requests", "abandoned", "abandonment_rate", "before_first_token", "streaming", "stop", "disconnect",
]


def with_wait_bucket(records):
    """Annotate each record with `bucket`, the index of its wait: its time to first token, or else its duration.

    A person who left (or was still waiting when the reply ended) before any token waited at least that long,
    so the duration is the wait they saw.
    """
    whens = [When(Q(wait__lt=high), then=Value(i)) for i, (_, _, high) in enumerate(BUCKETS) if high is not None]
    return records.annotate(wait=Coalesce("ttft_ms", "duration_ms")).annotate(
        bucket=Case(*whens, default=Value(len(BUCKETS) - 1), output_field=IntegerField())
    )


def by_first_token_wait(start=None, end=None, records=None):
    """Return one row per bucket: requests, abandoned (by phase and by reason) and the abandonment rate.

    Failed requests are left out: the person did not choose how they ended.
    """
    records = (records if records is not None else records_between(start, end)).exclude(
        status=UsageRecord.Status.FAILED
    )
    left = {
        "abandoned": Count("abandonment"),
        "before_first_token": Count("abandonment", filter=Q(abandonment__phase=AbandonmentEvent.Phase.BEFORE_FIRST_TOKEN)),
        "streaming": Count("abandonment", filter=Q(abandonment__phase=AbandonmentEvent.Phase.STREAMING)),
        "stop": Count("abandonment", filter=Q(abandonment__reason=AbandonmentEvent.Reason.STOP)),
        "disconnect": Count("abandonment", filter=Q(abandonment__reason=AbandonmentEvent.Reason.DISCONNECT)),
    }
    annotated = with_wait_bucket(records.order_by())
    found = {v["bucket"]: v for v in annotated.values("bucket").annotate(requests=Count("id"), **left)}
    rows = []
    for i, (label, _, _) in enumerate(BUCKETS):
        figures = found.get(i, {})
        requests = figures.get("requests", 0)
        rows.append({
            "bucket": label, "requests": requests,
            **{name: figures.get(name, 0) for name in left},
            "abandonment_rate": round(figures.get("abandoned", 0) / requests, 4) if requests else 0.0,
        })
    return rows
