"""Per-key limits checked before a request goes upstream: a request rate, and the daily budgets.

Budgets go through billing.budgets (reserve-then-settle, in the database): a request's worst case is
held against the key's daily budget and the site's (CHAT_SITE_DAILY_BUDGET_USD) before it goes
upstream, and settled to its real cost in the transaction that writes its usage record, so requests
in parallel, on any number of processes, cannot together spend past either.
"""

from datetime import datetime, time, timedelta, timezone

from django.conf import settings

from billing import budgets
from billing.models import ModelPrice, Refusal
from chat import limits
from gateway.errors import ApiError


def check_rate(api_key, model="", now=None):
    """Count this request in the key's current minute; refuse (429) past its rate limit."""
    if not api_key.rate_limit:
        return
    now = now or datetime.now(timezone.utc)
    count = limits.add_one(f"gateway:rate:{api_key.pk}:{int(now.timestamp()) // 60}", timeout=90)
    if count > api_key.rate_limit:
        # Once per key and minute, as every refusal here: a refused client may retry in a loop.
        limits.count_once(Refusal.Kind.RATE_LIMITED, "apikey", str(api_key.pk), model, channel="api",
                          now=now.timestamp())
        raise ApiError(429, f"Rate limit reached: this key may make {api_key.rate_limit} requests a minute.",
                       "rate_limit_exceeded", retry_after=60 - int(now.timestamp()) % 60)


def scopes(api_key):
    """Return the budgets a request with this key counts against (those with no limit are left out)."""
    found = [budgets.Scope("apikey", str(api_key.pk), api_key.daily_budget_usd),
             budgets.Scope("site", "", settings.CHAT_SITE_DAILY_BUDGET_USD)]
    return [scope for scope in found if scope.limit_usd is not None]


def reserve(api_key, model, worst_tokens, now=None):
    """Hold the request's worst-case cost against its budgets; return the Reservation (None: no budget).

    Refuses (429 insufficient_quota, Retry-After until midnight UTC) when a budget has no room for
    it, and (400) a budgeted request for a model with no price, whose cost cannot be bounded.
    """
    limited = scopes(api_key)
    if not limited:
        return None
    price = ModelPrice.objects.in_force(model)
    if price is None:
        raise ApiError(400, f"The model {model!r} has no price, so this key's daily budget cannot cover it.",
                       "model_unpriced", "model")
    try:
        return budgets.reserve(limited, price.cost(*worst_tokens))
    except budgets.BudgetExceeded as exc:
        limits.count_once(Refusal.Kind.BUDGET_EXCEEDED, exc.scope.kind, exc.scope.key, model, channel="api")
        now = now or datetime.now(timezone.utc)
        reset = datetime.combine(now.date(), time.min, timezone.utc) + timedelta(days=1)
        raise ApiError(429, str(exc), "insufficient_quota",
                       retry_after=max(1, int((reset - now).total_seconds()))) from exc


def settle(reservation, cost):
    """Count a request's real cost against its budgets (call it in the record's transaction)."""
    budgets.settle(reservation, cost or 0)
