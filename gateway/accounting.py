"""The one usage record an API, batch or bench request leaves, whatever its end."""

from channels.db import database_sync_to_async
from django.utils import timezone

from billing.models import AbandonmentEvent, UsageRecord
from chat.turns import usage_of


def record(exchange, channel, api_key=None):
    """Write the exchange's usage record (and abandonment event if the caller left); return the record.

    Usage is the upstream's where it reported it, else estimated and marked so, whether or not the
    caller asked for usage.
    """
    call = exchange.call
    failed = exchange.error is not None
    usage, estimated = usage_of(call, failed)
    if failed:
        status = UsageRecord.Status.FAILED
    elif exchange.reason == "disconnect":
        status = UsageRecord.Status.DISCONNECTED
    else:
        status = UsageRecord.Status.COMPLETED
    abandonment = None
    if status == UsageRecord.Status.DISCONNECTED:
        abandonment = {
            "reason": AbandonmentEvent.Reason.DISCONNECT,
            "phase": AbandonmentEvent.Phase.BEFORE_FIRST_TOKEN if exchange.first_at is None
            else AbandonmentEvent.Phase.STREAMING,
            "tokens_delivered": exchange.delivered,
            "elapsed_ms": exchange.duration_ms,
        }
    return UsageRecord.record(
        abandonment=abandonment, channel=channel, api_key=api_key,
        user_id=api_key.user_id if api_key is not None else None,
        model=call.model, upstream_model=call.upstream_model, streamed=call.stream, status=status,
        finish_reason=call.finish_reason, prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens, estimated=estimated,
        ttft_ms=exchange.ttft_ms, duration_ms=exchange.duration_ms, retries=call.retries,
        error=str(exchange.error or ""), started=exchange.started_at, finished=timezone.now(),
    )


arecord = database_sync_to_async(record)
