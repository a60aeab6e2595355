"""Per-key limits checked before a request goes upstream: a request rate and a reserved daily budget.

The budget is reserve-then-settle: each request first adds its worst-case cost to the key's
counter for the UTC day, and is refused if that would pass the budget; when it ends, the
reservation is replaced by what the request really cost. So any number of requests at once can
never together spend more than the budget. The counter lives in Django's cache (Redis when
REDIS_URL is set, so it holds across processes), seeded from the day's usage records.

Written so that a shared reserve/settle mechanism for every scope (a person, an API key) can take
its place: `reserve()` returns an opaque reservation, `settle()` takes it back with the real cost.
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

from django.core.cache import cache
from django.db import models

from billing.models import ModelPrice, UsageRecord
from gateway.errors import ApiError

UNIT = Decimal("0.0000000001")  # the counter counts ten-billionths of a dollar: costs' own precision
COUNTER_TTL = 2 * 24 * 3600


@dataclass(slots=True)
class Reservation:
    counter: str
    units: int


def check_rate(api_key, now=None):
    """Count this request in the key's current minute; refuse (429) past its rate limit."""
    if not api_key.rate_limit:
        return
    now = now or datetime.now(timezone.utc)
    counter = f"gateway:rate:{api_key.pk}:{int(now.timestamp()) // 60}"
    cache.add(counter, 0, timeout=90)
    try:
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.set(counter, 1, timeout=90)
        count = 1
    if count > api_key.rate_limit:
        raise ApiError(429, f"Rate limit reached: this key may make {api_key.rate_limit} requests a minute.",
                       "rate_limit_exceeded", retry_after=60 - int(now.timestamp()) % 60)


def reserve(api_key, model, worst_tokens, now=None):
    """Reserve the worst-case cost of a request against the key's daily budget; return the Reservation.

    Returns None when the key has no budget. Refuses (429 insufficient_quota, Retry-After until
    midnight UTC) when the reservation would pass the budget, and (400) a budgeted key's request for
    a model with no price, whose cost could not be bounded.
    """
    budget = api_key.daily_budget_usd
    if budget is None:
        return None
    now = now or datetime.now(timezone.utc)
    price = ModelPrice.objects.in_force(model)
    if price is None:
        raise ApiError(400, f"The model {model!r} has no price, so this key's daily budget cannot cover it.",
                       "model_unpriced", "model")
    units = to_units(price.cost(*worst_tokens))
    midnight = datetime.combine(now.date(), time.min, timezone.utc)
    counter = f"gateway:spent:{api_key.pk}:{now.date().isoformat()}"
    if cache.get(counter) is None:
        cache.add(counter, to_units(spent_since(api_key, midnight)), timeout=COUNTER_TTL)
    total = incr(counter, units)
    if total > to_units(budget):
        incr(counter, -units)
        reset = midnight + timedelta(days=1)
        raise ApiError(429, f"This key's daily budget of ${budget.normalize()} is spent (or this request's "
                       f"worst case, ${units * UNIT}, would pass it). It resets at midnight UTC.",
                       "insufficient_quota", retry_after=max(1, int((reset - now).total_seconds())))
    return Reservation(counter, units)


def settle(reservation, cost):
    """Replace a reservation by what the request really cost (None or 0 when it cost nothing)."""
    if reservation is not None:
        incr(reservation.counter, to_units(cost or 0) - reservation.units)


def spent_since(api_key, since):
    """Return what the key's recorded requests have cost since `since`."""
    total = UsageRecord.objects.filter(api_key=api_key, started__gte=since).aggregate(total=models.Sum("cost_usd"))
    return total["total"] or Decimal(0)


def to_units(amount):
    return int(Decimal(amount) / UNIT)


def incr(counter, delta):
    """Add `delta` to a counter; an evicted counter restarts from `delta`."""
    try:
        return cache.incr(counter, delta)
    except ValueError:
        cache.add(counter, 0, timeout=COUNTER_TTL)
        return cache.incr(counter, delta)
