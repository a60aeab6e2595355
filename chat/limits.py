"""Limits checked before a reply starts: message rates, daily budgets (reserved), and counted refusals.

Who is limited: a signed-in user per account (their `UserLimits` in the admin override the
settings); an anonymous visitor per session *and* per client address, so dropping the cookie
buys nothing. Rate counters live in Django's cache (Redis when REDIS_URL is set, shared by every
process); budgets are reserved in the database (billing/budgets.py).
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCacheClient

from billing import budgets
from billing.models import ModelPrice, Refusal, UserLimits
from chat.protocol import ProtocolError

MILLION = Decimal(1_000_000)
PER_MESSAGE_TOKENS = 16  # role markers and separators the upstream adds around each message


class Refused(ProtocolError):
    """The request cannot start; `scope` is whose limit it hit (person, address, site), `who` their key."""

    def __init__(self, message, code, scope="", who=""):
        super().__init__(message, code)
        self.scope = scope
        self.who = who

    def count(self, model="", channel="ws"):
        """Leave the Refusal row for a refusal that was not counted where it was raised."""
        count_refusal(self.code, self.scope, self.who, model, channel)


@dataclass(frozen=True, slots=True)
class Allowance:
    """One person's effective limits: their UserLimits where set, else the settings."""

    rate_limit: int
    daily_budget_usd: Decimal | None
    max_inflight: int

    @classmethod
    def of(cls, owner):
        """Return the limits that apply to `owner` (one query for a signed-in user, none otherwise)."""
        rate, budget, inflight = (settings.CHAT_RATE_LIMIT, settings.CHAT_DAILY_BUDGET_USD,
                                  settings.CHAT_MAX_INFLIGHT_PER_PERSON)
        if owner.user_id:
            own = UserLimits.objects.filter(user_id=owner.user_id).first()
            if own is not None:
                rate = rate if own.rate_limit is None else own.rate_limit
                budget = budget if own.daily_budget_usd is None else own.daily_budget_usd
                inflight = inflight if own.max_inflight is None else own.max_inflight
        return cls(rate, budget, inflight)


def check(owner, model="", now=None):
    """Count this message against the person's and the address's rate; return the person's Allowance."""
    now = (now or datetime.now(timezone.utc)).timestamp()
    allowance = Allowance.of(owner)
    if allowance.rate_limit:
        check_rate("person", owner.key, allowance.rate_limit, now, model,
                   f"Too many messages: the limit is {allowance.rate_limit} a minute. Try again shortly.")
    if not owner.user_id and settings.CHAT_IP_RATE_LIMIT:
        check_rate("address", owner.address, settings.CHAT_IP_RATE_LIMIT, now, model,
                   f"Too many messages from your network address: the limit is {settings.CHAT_IP_RATE_LIMIT} "
                   "a minute. Try again shortly.")
    return allowance


def check_rate(scope, who, limit, now, model, message):
    """Count one message for `who`; raise Refused when the last minute holds more than `limit`.

    A sliding window: this minute's count plus the previous minute's, weighted by how much of it
    is still within the last 60 seconds, so a burst across a minute boundary is not let through twice.
    """
    minute, elapsed = divmod(now, 60)
    prefix = f"chat:rate:{scope}:{budgets.who_hash(who)}:"
    count, previous = count_minute(f"{prefix}{int(minute)}", f"{prefix}{int(minute) - 1}", timeout=150)
    if count + previous * (1 - elapsed / 60) > limit:
        count_once(Refusal.Kind.RATE_LIMITED, scope, who, model, now=now)
        raise Refused(message, "rate_limited", scope, who)


def count_minute(key, previous_key, timeout):
    """Add one to the counter `key` (kept `timeout` seconds); return (its count, the counter `previous_key`'s).

    On Redis this is one round trip (SET NX EX, INCR, GET in one MULTI) instead of the cache API's
    four (SET NX, EXISTS, INCR, GET): it runs on the one database thread before every reply. The
    keys and values are the cache's own (its prefix and version; integers stored as such), so
    `cache.get` reads the same counts.
    """
    client = getattr(cache, "_cache", None)
    if not isinstance(client, RedisCacheClient):
        return add_one(key, timeout), cache.get(previous_key) or 0
    key, previous_key = cache.make_and_validate_key(key), cache.make_and_validate_key(previous_key)
    with client.get_client(key, write=True).pipeline(transaction=True) as pipe:
        # Atomic: the counter cannot expire between its SET NX and its INCR (which would leave it with no TTL).
        _, count, previous = pipe.set(key, 0, nx=True, ex=timeout).incr(key).get(previous_key).execute()
    return count, 0 if previous is None else int(previous)


def add_one(key, timeout):
    """Add one to the cache counter `key` (kept `timeout` seconds, shared by every process); return its count."""
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def count_refusal(kind, scope, who, model="", channel="ws"):
    """Leave the row the reports count refusals by (who only as a keyed hash)."""
    Refusal.objects.create(kind=kind, scope=scope, who_hash=budgets.who_hash(who) if who else "",
                           model=model[:200], channel=channel)


def scopes(owner, allowance):
    """Return the budgets a request by `owner` counts against (scopes with no limit are ignored)."""
    found = [budgets.Scope("person", owner.key, allowance.daily_budget_usd),
             budgets.Scope("site", "", settings.CHAT_SITE_DAILY_BUDGET_USD)]
    if not owner.user_id:
        found.append(budgets.Scope("address", owner.address, settings.CHAT_ADDRESS_DAILY_BUDGET_USD))
    return [scope for scope in found if scope.limit_usd is not None]


def worst_case(call, price):
    """Return the most `call` can cost: an upper bound of its prompt at the input rate + max_tokens at the output rate.

    A token is at least one byte of UTF-8 for the byte-level tokenizers upstreams use, so the
    prompt's bytes (plus a few tokens per message) bound its tokens from above.
    """
    texts = [call.system, *(m["content"] for m in call.messages)]
    prompt = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) + PER_MESSAGE_TOKENS * len(texts)
    if price is None:
        rate_in = rate_out = settings.CHAT_UNPRICED_USD_PER_MTOK
    else:
        rate_in, rate_out = price.input_per_mtok, price.output_per_mtok
    return (prompt * rate_in + call.max_tokens * rate_out) / MILLION


def reserve(owner, allowance, call):
    """Reserve `call`'s worst case against every budget of `owner`; raise Refused naming the full one.

    The caller counts the refusal (`Refused.count`) once its transaction has rolled back.

    Unpriced models: with a budget in force they are reserved (and settled) at
    CHAT_UNPRICED_USD_PER_MTOK, or refused when that is unset, since their cost cannot be bounded.
    """
    limited = scopes(owner, allowance)
    if not limited:
        return None
    price = ModelPrice.objects.in_force(call.model)
    if price is None and settings.CHAT_UNPRICED_USD_PER_MTOK is None:
        raise Refused(f"The model {call.model} has no price, so no budget can be kept: choose another model.",
                      "budget_exceeded", limited[0].kind, limited[0].key)
    try:
        return budgets.reserve(limited, worst_case(call, price))
    except budgets.BudgetExceeded as exc:
        raise Refused(str(exc), exc.code, exc.scope.kind, exc.scope.key) from exc


def actual_cost(reservation, record):
    """Return what a settled request cost for its budgets: the record's cost, or the fallback price's."""
    if record.cost_usd is not None or reservation is None:
        return record.cost_usd
    rate = settings.CHAT_UNPRICED_USD_PER_MTOK
    if rate is None:
        return None
    return (record.prompt_tokens + record.completion_tokens) * rate / MILLION


def count_once(kind, scope, who, model="", channel="ws", now=None):
    """Count a refusal at most once per scope, who and minute (for refusals an attacker can repeat freely).

    `now`: the POSIX time of the refusal (the rate check's own clock), or the current time.
    """
    minute = int(datetime.now(timezone.utc).timestamp() if now is None else now) // 60
    if cache.add(f"chat:refused:{channel}:{kind}:{scope}:{budgets.who_hash(who)}:{minute}", 1, timeout=90):
        count_refusal(kind, scope, who, model, channel)
