"""CSV export of usage records, streamed page by page so a million rows never sit in memory."""

import csv
import io

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Q
from django.http import StreamingHttpResponse

COLUMNS = [
    ("request_id", "request_id"), ("started", "started"), ("finished", "finished"), ("model", "model"),
    ("upstream_model", "upstream_model"), ("status", "status"), ("streamed", "streamed"),
    ("estimated", "estimated"), ("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens"),
    ("cached_tokens", "cached_tokens"), ("cache_write_tokens", "cache_write_tokens"), ("cost_usd", "cost_usd"),
    ("upstream_cost_usd", "upstream_cost_usd"), ("channel", "channel"), ("ttft_ms", "ttft_ms"),
    ("duration_ms", "duration_ms"), ("retries", "retries"), ("user", "user__username"),
    ("visitor", "visitor"), ("conversation", "conversation_id"), ("message", "message_id"),
    ("abandonment_reason", "abandonment__reason"), ("abandonment_phase", "abandonment__phase"), ("error", "error"),
]
PAGE = 2000


def page(records, after=None, size=PAGE):
    """Return (csv text, last key) for the next `size` records after the (started, id) key, newest first."""
    if after is not None:
        started, pk = after
        records = records.filter(Q(started__lt=started) | Q(started=started, pk__lt=pk))
    rows = list(records.order_by("-started", "-pk").values_list("started", "pk", *[f for _, f in COLUMNS])[:size])
    if not rows:
        return "", None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row[2:]])
    return buffer.getvalue(), rows[-1][:2]


def header():
    """Return the CSV header line."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([name for name, _ in COLUMNS])
    return buffer.getvalue()


def pages(records):
    """Yield the header, then the records' CSV text one page at a time."""
    yield header()
    text, after = page(records)
    while text:
        yield text
        text, after = page(records, after)


async def apages(records):
    """See pages(); each page is read in the database thread, so an ASGI server streams it too."""
    yield header()
    text, after = await sync_to_async(page)(records)
    while text:
        yield text
        text, after = await sync_to_async(page)(records, after)


def csv_response(request, records, filename):
    """Return a streaming CSV download of `records` (sync under WSGI, async under ASGI)."""
    content = apages(records) if isinstance(request, ASGIRequest) else pages(records)
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
