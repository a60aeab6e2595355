"""Per-person limits: a message rate (rate_limited) and a daily budget (budget_exceeded).

The attacks on them (cookie-dropping, parallel sockets, per-address limits) are in test_guards.py.
"""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache

from billing.budgets import who_hash
from billing.models import ModelPrice, Refusal, UsageRecord
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


async def send(ws, content="hello"):
    await ws.send_json_to({"type": "send", "content": content})
    return await ws.receive_json_from(timeout=5)


async def test_it_refuses_messages_past_the_rate_limit(alice_session, bob_session, settings):
    settings.CHAT_RATE_LIMIT = 2
    alice_ws = await connect(alice_session)
    for _ in range(2):
        assert (await send(alice_ws))["type"] == "start"
        await receive_until_done(alice_ws)
    refused = await send(alice_ws)
    assert refused["type"] == "error" and refused["code"] == "rate_limited"
    assert await UsageRecord.objects.acount() == 2
    bob_ws = await connect(bob_session)  # another person has their own count
    assert (await send(bob_ws))["type"] == "start"
    await receive_until_done(bob_ws)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_it_refuses_a_person_whose_daily_budget_is_spent(alice_session, bob_session, settings, use_mock):
    model = "mock/gpt-4.1-mini+tokens=100"  # ~$0.0015 a reply
    settings.CHAT_MODELS = [model]
    await ModelPrice.objects.acreate(model=model, input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    settings.CHAT_MAX_TOKENS = 100
    settings.CHAT_DAILY_BUDGET_USD = Decimal("0.004")
    alice_ws = await connect(alice_session)
    for _ in range(2):
        assert (await send(alice_ws))["type"] == "start"
        await receive_until_done(alice_ws)
    refused = await send(alice_ws)  # $0.003 spent + a worst case of $0.0016 does not fit
    assert refused["code"] == "budget_exceeded" and "Your daily budget of $0.004" in refused["message"]
    assert use_mock.stats()["requests"] == 2
    bob_ws = await connect(bob_session)
    assert (await send(bob_ws))["type"] == "start"
    await receive_until_done(bob_ws)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


def test_it_does_not_let_a_burst_through_twice_across_a_minute_boundary(settings):
    from datetime import UTC, datetime

    from chat import limits
    from chat.turns import Owner

    settings.CHAT_RATE_LIMIT = 2
    owner = Owner(None, "boundary-session", "192.0.2.1")
    end_of_minute = datetime(2026, 1, 1, 12, 0, 59, 900_000, tzinfo=UTC)
    for _ in range(2):
        limits.check(owner, now=end_of_minute)
    with pytest.raises(limits.Refused):
        limits.check(owner, now=end_of_minute.replace(minute=1, second=0, microsecond=100_000))
    # A minute later the earlier burst has slid out of the window.
    limits.check(owner, now=end_of_minute.replace(minute=2, second=0))


class ExpiringCache(LocMemCache):
    """A local cache whose new keys expire at once: `add` stores nothing, as when a key expires before `incr`."""

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return True


@pytest.mark.django_db(transaction=False)
def test_it_starts_a_counter_that_expired_between_add_and_incr_again_at_one(monkeypatch):
    from chat import limits

    monkeypatch.setattr(limits, "cache", ExpiringCache(f"expiring-{uuid.uuid4()}", {}))
    at = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC).timestamp()
    limits.check_rate("person", "alice", 1, at, "", "Too many.")  # counted as the first message: within a limit of 1
    with pytest.raises(limits.Refused):
        limits.check_rate("person", "alice", 1, at + 1, "", "Too many.")
    for second in range(2):  # 1, then 2: within a limit of 2; the third is over
        limits.check_rate("person", "bob", 2, at + second, "", "Too many.")
    with pytest.raises(limits.Refused):
        limits.check_rate("person", "bob", 2, at + 2, "", "Too many.")


@pytest.mark.django_db(transaction=False)
def test_it_counts_a_refusal_once_a_minute_by_the_clock_the_rate_check_was_given():
    from chat import limits

    who = f"visitor:{uuid.uuid4().hex}"
    start = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC).timestamp()

    def send(at):
        limits.check_rate("person", who, 1, at, "demo/assistant", "Too many.")

    def refusals():
        return Refusal.objects.filter(kind="rate_limited", scope="person", who_hash=who_hash(who),
                                      model="demo/assistant", channel="ws").count()

    send(start)
    for at in (start + 1, start + 50):
        with pytest.raises(limits.Refused):
            send(at)
    assert refusals() == 1
    send(start + 120)  # two minutes on, by the same clock: the window is empty, and the next refusal counts again
    with pytest.raises(limits.Refused):
        send(start + 121)
    assert refusals() == 2


@pytest.mark.django_db(transaction=False)
def test_it_weighs_the_previous_minute_by_how_much_of_it_is_still_in_the_window(monkeypatch):
    from chat import limits

    monkeypatch.setattr(limits, "cache", LocMemCache(f"window-{uuid.uuid4()}", {}))
    minute = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    for second in (10, 20):
        limits.check_rate("person", "alice", 2, minute + second, "", "Too many.")
    # Half-way through the next minute half of the previous one is in the window: 1 + 2 x 0.5 is not over 2.
    limits.check_rate("person", "alice", 2, minute + 90, "", "Too many.")
    with pytest.raises(limits.Refused) as refused:  # 2 + 2 x 0.5 is
        limits.check_rate("person", "alice", 2, minute + 90, "demo/assistant", "Too many.")
    assert (refused.value.code, refused.value.scope, refused.value.who, str(refused.value)) == (
        "rate_limited", "person", "alice", "Too many.")


@pytest.mark.django_db(transaction=False)
def test_it_lets_its_counters_expire_once_the_window_has_passed_them(monkeypatch):
    import time

    from chat import limits

    counters = ExpiringCache(f"expiring-{uuid.uuid4()}", {})  # the counter is set after a failed incr
    monkeypatch.setattr(limits, "cache", counters)
    limits.check_rate("person", "alice", 5, time.time(), "", "Too many.")
    counted = LocMemCache(f"counted-{uuid.uuid4()}", {})  # the counter is added, then incremented
    monkeypatch.setattr(limits, "cache", counted)
    limits.check_rate("person", "alice", 5, time.time(), "", "Too many.")
    for cache in (counters, counted):
        (expires,) = cache._expire_info.values()
        # Read as "the previous minute" until the end of the next one: kept 2 minutes, and not for good.
        assert expires is not None and 120 <= expires - time.time() <= 300


@pytest.mark.django_db(transaction=False)
def test_it_leaves_the_row_of_a_refusal_counted_where_it_is_handled():
    from chat import limits

    limits.Refused("Your daily budget is spent.", "budget_exceeded", "person", "visitor:abc").count("mock/m", "api")
    row = Refusal.objects.get()
    assert (row.kind, row.scope, row.who_hash, row.model, row.channel) == (
        "budget_exceeded", "person", who_hash("visitor:abc"), "mock/m", "api")


@pytest.mark.django_db(transaction=False)
def test_it_counts_a_busy_refusal_once_with_no_model_and_lets_its_marker_expire(monkeypatch):
    import time

    from chat import limits

    markers = LocMemCache(f"markers-{uuid.uuid4()}", {})
    monkeypatch.setattr(limits, "cache", markers)
    for _ in range(2):
        limits.count_once("busy", "person", "visitor:abc")
    row = Refusal.objects.get()
    assert (row.kind, row.scope, row.who_hash, row.model, row.channel) == (
        "busy", "person", who_hash("visitor:abc"), "", "ws")
    (expires,) = markers._expire_info.values()
    assert expires is not None and 60 <= expires - time.time() <= 300  # outlives its minute, not for good
    limits.count_once("busy", "apikey", "7", "mock/m", channel="api")
    assert Refusal.objects.filter(scope="apikey", model="mock/m", channel="api").count() == 1


@pytest.mark.django_db(transaction=False)
def test_it_leaves_a_refusal_row_with_no_who_and_a_model_cut_to_its_field():
    from chat import limits

    limits.count_refusal("busy", "site", "")
    limits.count_refusal("budget_exceeded", "site", "", "m" * 250)
    rows = list(Refusal.objects.order_by("pk").values_list("kind", "who_hash", "model", "channel"))
    assert rows == [("busy", "", "", "ws"), ("budget_exceeded", "", "m" * 200, "ws")]


def test_it_refuses_with_no_scope_or_who_unless_told():
    from chat import limits

    refused = limits.Refused("No such conversation.", "not_found")
    assert (str(refused), refused.code, refused.scope, refused.who) == ("No such conversation.", "not_found", "", "")


def test_it_settles_a_budget_at_the_records_cost_or_else_at_the_unpriced_rate(settings):
    from types import SimpleNamespace

    from chat import limits

    settings.CHAT_UNPRICED_USD_PER_MTOK = Decimal("2")
    held = object()  # a reservation
    priced = SimpleNamespace(cost_usd=Decimal("0.5"), prompt_tokens=100, completion_tokens=50)
    unpriced = SimpleNamespace(cost_usd=None, prompt_tokens=100, completion_tokens=50)
    assert limits.actual_cost(held, priced) == Decimal("0.5")
    assert limits.actual_cost(None, priced) == Decimal("0.5")
    assert limits.actual_cost(held, unpriced) == Decimal("0.0003")  # 150 tokens x $2 a million
    assert limits.actual_cost(None, unpriced) is None  # nothing was reserved: nothing to settle
    settings.CHAT_UNPRICED_USD_PER_MTOK = None
    assert limits.actual_cost(held, unpriced) is None


def test_it_names_each_budget_a_request_counts_against(settings):
    from billing.budgets import Scope
    from chat import limits
    from chat.turns import Owner

    settings.CHAT_SITE_DAILY_BUDGET_USD, settings.CHAT_ADDRESS_DAILY_BUDGET_USD = Decimal("50"), Decimal("2")
    visitor = Owner(None, "k" * 32, "198.51.100.7")
    assert limits.scopes(visitor, limits.Allowance(0, Decimal("1"), 2)) == [
        Scope("person", visitor.key, Decimal("1")), Scope("site", "", Decimal("50")),
        Scope("address", "198.51.100.7", Decimal("2")),
    ]
    settings.CHAT_SITE_DAILY_BUDGET_USD = None  # no limit: not a budget
    assert [s.kind for s in limits.scopes(visitor, limits.Allowance(0, None, 2))] == ["address"]


@pytest.mark.django_db(transaction=False)
def test_it_refuses_an_unpriced_model_naming_the_first_budget_it_could_not_keep(settings):
    from chat import limits
    from chat.providers import Call
    from chat.turns import Owner

    settings.CHAT_UNPRICED_USD_PER_MTOK = None
    visitor = Owner(None, "k" * 32, "198.51.100.7")
    call = Call(model="nowhere/unpriced-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(limits.Refused) as refused:
        limits.reserve(visitor, limits.Allowance(0, Decimal("1"), 2), call)
    assert (refused.value.code, refused.value.scope, refused.value.who) == ("budget_exceeded", "person", visitor.key)
    assert str(refused.value).startswith("The model nowhere/unpriced-model has no price")
    settings.CHAT_UNPRICED_USD_PER_MTOK = Decimal("1000")  # priced now, and over a budget of a millionth of a dollar
    with pytest.raises(limits.Refused) as refused:
        limits.reserve(visitor, limits.Allowance(0, Decimal("0.000001"), 2), call)
    assert (refused.value.code, refused.value.scope, refused.value.who) == ("budget_exceeded", "person", visitor.key)


@pytest.mark.django_db(transaction=False)
def test_it_takes_each_limit_a_users_override_leaves_empty_from_the_settings(settings):
    from django.contrib.auth.models import User

    from billing.models import UserLimits
    from chat import limits
    from chat.turns import Owner

    settings.CHAT_RATE_LIMIT, settings.CHAT_DAILY_BUDGET_USD, settings.CHAT_MAX_INFLIGHT_PER_PERSON = 7, Decimal("9"), 3
    user = User.objects.create_user("carol", password="pw")
    UserLimits.objects.create(user=user, daily_budget_usd=Decimal("5"))
    assert limits.Allowance.of(Owner(user, "")) == limits.Allowance(7, Decimal("5"), 3)
    UserLimits.objects.filter(user=user).update(rate_limit=2, daily_budget_usd=None, max_inflight=1)
    assert limits.Allowance.of(Owner(user, "")) == limits.Allowance(2, Decimal("9"), 1)


@pytest.mark.django_db(transaction=False)
def test_it_refuses_a_person_past_their_rate_by_their_own_scope_and_key(settings, monkeypatch):
    from chat import limits
    from chat.turns import Owner

    monkeypatch.setattr(limits, "cache", LocMemCache(f"person-{uuid.uuid4()}", {}))
    settings.CHAT_RATE_LIMIT, settings.CHAT_IP_RATE_LIMIT = 1, 0
    visitor = Owner(None, "k" * 32, "198.51.100.7")
    at = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert limits.check(visitor, "demo/assistant", now=at).rate_limit == 1
    with pytest.raises(limits.Refused) as refused:
        limits.check(visitor, "demo/assistant", now=at)
    assert (str(refused.value), refused.value.code, refused.value.scope, refused.value.who) == (
        "Too many messages: the limit is 1 a minute. Try again shortly.", "rate_limited", "person", visitor.key)


@pytest.mark.parametrize("backend", ["the project's cache", "a local cache"])
def test_a_rate_counter_counts_in_the_caches_own_keys_and_is_kept_its_timeout(monkeypatch, backend):
    """count_minute: one round trip on Redis (CI runs this with REDIS_URL), the cache API elsewhere; the same counts."""
    from django.core.cache import cache
    from django.core.cache.backends.redis import RedisCacheClient

    from chat import limits

    if backend == "a local cache":
        monkeypatch.setattr(limits, "cache", LocMemCache(f"local-{uuid.uuid4()}", {}))
    counters = limits.cache
    key = f"test:rate:{uuid.uuid4().hex}"
    counters.set(f"{key}:previous", 7, 60)
    assert limits.count_minute(key, f"{key}:previous", 150) == (1, 7)
    assert limits.count_minute(key, f"{key}:previous", 150) == (2, 7)
    assert counters.get(key) == 2 and counters.get(f"{key}:previous") == 7  # what cache.get reads
    assert limits.count_minute(f"{key}:other", f"{key}:none", 150) == (1, 0)
    client = getattr(cache, "_cache", None)
    if backend == "the project's cache" and isinstance(client, RedisCacheClient):
        ttl = client.get_client(key, write=True).ttl(cache.make_and_validate_key(key))
        assert 140 <= ttl <= 150  # kept its timeout, not for good
