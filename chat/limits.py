"""Per-person limits checked before a reply starts: a message rate and a daily spending budget."""

from datetime import datetime, time, timezone

from django.conf import settings
from django.core.cache import cache

from billing.models import UsageRecord


class Refused(Exception):
    """The request cannot start; `code` is the protocol's error code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def check(owner, now=None):
    """Raise Refused when this person is over CHAT_RATE_LIMIT or CHAT_DAILY_BUDGET_USD."""
    now = now or datetime.now(timezone.utc)
    if settings.CHAT_RATE_LIMIT:
        check_rate(owner, now)
    if settings.CHAT_DAILY_BUDGET_USD is not None:
        check_budget(owner, now)


def check_rate(owner, now):
    """Count this message in the person's current minute; refuse past CHAT_RATE_LIMIT.

    The counter lives in Django's cache, which is Redis when REDIS_URL is set, so the limit holds
    across server processes.
    """
    key = f"chat:rate:{owner.key}:{int(now.timestamp()) // 60}"
    cache.add(key, 0, timeout=90)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=90)
        count = 1
    if count > settings.CHAT_RATE_LIMIT:
        raise Refused(
            f"Too many messages: the limit is {settings.CHAT_RATE_LIMIT} a minute. Try again shortly.",
            "rate_limited",
        )


def check_budget(owner, now):
    """Refuse when what this person's requests cost since midnight UTC has reached the daily budget."""
    midnight = datetime.combine(now.date(), time.min, timezone.utc)
    spent = UsageRecord.objects.cost_since(owner.user_id, owner.visitor, midnight)
    budget = settings.CHAT_DAILY_BUDGET_USD
    if spent >= budget:
        raise Refused(f"Today's budget of ${budget} is spent (${spent:.4f}). It resets at midnight UTC.",
                      "budget_exceeded")
