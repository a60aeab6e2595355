"""The guards, tried as an attacker would: cookie-dropping visitors, parallel sockets, one greedy person.

The mock upstream's request count proves every refusal happened before any upstream request.
"""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client

from billing.models import ModelPrice, Refusal, UsageRecord, UserLimits
from tests.conftest import connect, new_session, receive_until_done
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

ATTACKER = ("198.51.100.7", 40000)
NEIGHBOUR = ("203.0.113.9", 40000)


async def first_frame(ws, content="hello", model=None):
    await ws.send_json_to({"type": "send", "content": content, "model": model})
    return await ws.receive_json_from(timeout=10)


async def finish(ws, start):
    """Drain a reply that started; return its `done`."""
    if start["type"] != "start":
        return None
    return (await receive_until_done(ws, timeout=15))[-1]


def price(model, input_per_mtok="3", output_per_mtok="15"):
    ModelPrice.objects.create(model=model, input_per_mtok=Decimal(input_per_mtok),
                              output_per_mtok=Decimal(output_per_mtok))


def signed_in_session(username, **limits):
    user = User.objects.create_user(username, password="pw")
    if limits:
        UserLimits.objects.create(user=user, **limits)
    client = Client()
    client.force_login(user)
    return client.session.session_key


@pytest.fixture
def mock_model(settings, use_mock):
    settings.CHAT_MODELS = ["mock/gpt-4.1-mini"]
    return use_mock


class StoppedClock(datetime):
    """The rate check's clock, stopped at the instant the test starts: its messages cannot straddle a minute."""

    at = None

    @classmethod
    def now(cls, tz=None):
        return cls.at.astimezone(tz)


async def test_it_stops_cookie_dropping_visitors_at_the_address_rate_limit(settings, mock_model, monkeypatch):
    from chat import limits

    monkeypatch.setattr(StoppedClock, "at", datetime.now(UTC))
    monkeypatch.setattr(limits, "datetime", StoppedClock)
    settings.CHAT_IP_RATE_LIMIT = 3
    frames = []
    for _ in range(6):  # a fresh session (a dropped cookie) for every message
        ws = await connect(await sync_to_async(new_session)(), client=ATTACKER)
        frames.append(await first_frame(ws))
        await finish(ws, frames[-1])
        await ws.disconnect()
    assert [f["type"] for f in frames] == ["start"] * 3 + ["error"] * 3
    assert {f["code"] for f in frames[3:]} == {"rate_limited"} and "network address" in frames[3]["message"]
    assert mock_model.stats()["requests"] == 3  # refused before any upstream request
    assert await Refusal.objects.filter(kind="rate_limited", scope="address").acount() == 1  # once a minute (the clock stopped)
    neighbour = await connect(await sync_to_async(new_session)(), client=NEIGHBOUR)
    assert (await first_frame(neighbour))["type"] == "start"  # another address has its own count
    await receive_until_done(neighbour)
    await neighbour.disconnect()


async def test_it_stops_cookie_dropping_visitors_at_the_address_budget(settings, use_mock):
    mock_model = use_mock
    model = "mock/gpt-4.1-mini+tokens=100"
    settings.CHAT_MODELS = [model]
    await sync_to_async(price)(model)
    settings.CHAT_MAX_TOKENS = 100  # worst case ~ $0.0016, real cost ~ $0.0015 a message
    settings.CHAT_DAILY_BUDGET_USD = Decimal("1")  # each session alone is nowhere near its budget
    settings.CHAT_ADDRESS_DAILY_BUDGET_USD = Decimal("0.004")
    outcomes = []
    for _ in range(5):
        ws = await connect(await sync_to_async(new_session)(), client=ATTACKER)
        start = await first_frame(ws)
        outcomes.append(start.get("code", "start"))
        await finish(ws, start)
        await ws.disconnect()
    assert outcomes == ["start"] * 2 + ["budget_exceeded"] * 3
    spent = (await UsageRecord.objects.aaggregate(total=Sum("cost_usd")))["total"]
    assert spent <= Decimal("0.004")
    assert mock_model.stats()["requests"] == outcomes.count("start")
    assert await Refusal.objects.filter(kind="budget_exceeded", scope="address").acount() == outcomes.count(
        "budget_exceeded")


async def parallel_sends(sessions, model, client=ATTACKER):
    sockets = [await connect(session, client=client) for session in sessions]
    await asyncio.gather(*(ws.send_json_to({"type": "send", "content": "tell me a story", "model": model})
                           for ws in sockets))
    firsts = await asyncio.gather(*(ws.receive_json_from(timeout=20) for ws in sockets))
    dones = await asyncio.gather(*(finish(ws, first) for ws, first in zip(sockets, firsts, strict=True)))
    for ws in sockets:
        await ws.disconnect()
    return firsts, dones


@pytest.mark.parametrize("budget", ["person", "site"])
async def test_it_never_lets_30_parallel_sends_spend_past_a_budget(settings, use_mock, budget):
    model = "mock/gpt-4.1-mini+tokens=200"  # ~$0.003 a reply: 30 of them would spend $0.09
    allow(settings, model)
    await sync_to_async(price)(model)
    settings.CHAT_MAX_TOKENS = 200
    if budget == "person":  # one visitor's 30 sockets
        settings.CHAT_DAILY_BUDGET_USD = Decimal("0.01")
        sessions = [await sync_to_async(new_session)()] * 30
    else:  # 30 visitors
        settings.CHAT_SITE_DAILY_BUDGET_USD = Decimal("0.01")
        sessions = [await sync_to_async(new_session)() for _ in range(30)]
    firsts, dones = await parallel_sends(sessions, model)
    started = [f for f in firsts if f["type"] == "start"]
    refused = [f for f in firsts if f["type"] == "error"]
    assert started and refused and len(started) + len(refused) == 30
    assert {f["code"] for f in refused} == {"budget_exceeded"}
    assert all(("site's" if budget == "site" else "Your") in f["message"] for f in refused)
    spent = (await UsageRecord.objects.aaggregate(total=Sum("cost_usd")))["total"]
    assert Decimal("0.003") * len(started) <= spent <= Decimal("0.01")
    assert await UsageRecord.objects.acount() == len(started) == use_mock.stats()["requests"]
    assert await Refusal.objects.filter(kind="budget_exceeded", scope=budget).acount() == len(refused)
    assert all(d["status"] == "completed" for d in dones if d)


async def test_it_refuses_an_unpriced_model_under_a_budget_unless_a_fallback_price_is_set(settings, mock_model):
    settings.CHAT_SITE_DAILY_BUDGET_USD = Decimal("1")
    ws = await connect(await sync_to_async(new_session)())
    refused = await first_frame(ws)
    assert refused["code"] == "budget_exceeded" and "no price" in refused["message"]
    assert mock_model.stats()["requests"] == 0
    settings.CHAT_UNPRICED_USD_PER_MTOK = Decimal("10")
    done = await finish(ws, await first_frame(ws))
    assert done["status"] == "completed" and done["cost_usd"] is None  # the record stays unpriced
    await ws.disconnect()


async def test_it_gives_one_person_no_more_than_their_share_of_generations(settings, use_mock):
    slow = "mock/gpt-4.1-mini+gap=40+tokens=30"
    allow(settings, slow)
    settings.CHAT_MAX_INFLIGHT_PER_PERSON = 2
    greedy = await sync_to_async(new_session)()
    sockets = [await connect(greedy, client=ATTACKER) for _ in range(5)]
    for ws in sockets:
        await ws.send_json_to({"type": "send", "content": "hi", "model": slow})
    firsts = [await ws.receive_json_from(timeout=10) for ws in sockets]
    assert [f["type"] for f in firsts].count("start") == 2
    busy = [f for f in firsts if f["type"] == "error"]
    assert {f["code"] for f in busy} == {"busy"} and "replies in flight" in busy[0]["message"]
    other = await connect(await sync_to_async(new_session)(), client=NEIGHBOUR)
    assert (await first_frame(other, model=slow))["type"] == "start"  # everyone else is served
    for ws, first in zip(sockets, firsts, strict=True):
        await finish(ws, first)
    await receive_until_done(other)
    assert use_mock.stats()["requests"] == 3  # the refused three never reached the upstream
    # Once a reply ends its place is free again.
    assert (await first_frame(sockets[-1], model=slow))["type"] == "start"
    await receive_until_done(sockets[-1])
    for ws in [*sockets, other]:
        await ws.disconnect()
    assert await Refusal.objects.filter(kind="busy", scope="person").acount() == 1


async def test_it_caps_replies_in_flight_per_address_for_cookie_droppers(settings, use_mock):
    slow = "mock/gpt-4.1-mini+gap=40+tokens=30"
    allow(settings, slow)
    settings.CHAT_MAX_INFLIGHT_PER_PERSON = 2
    settings.CHAT_MAX_INFLIGHT_PER_ADDRESS = 3
    firsts, _ = await parallel_sends([await sync_to_async(new_session)() for _ in range(6)], slow)
    assert [f["type"] for f in firsts].count("start") == 3
    assert all("network address" in f["message"] for f in firsts if f["type"] == "error")
    assert use_mock.stats()["requests"] == 3
    assert await UsageRecord.objects.acount() == 3


async def test_it_caps_open_sockets_per_person(settings):
    settings.CHAT_MAX_SOCKETS_PER_PERSON = 2
    session = await sync_to_async(new_session)()
    kept = [await connect(session, client=ATTACKER) for _ in range(2)]
    third = await connect(session, client=ATTACKER)
    refused = await third.receive_json_from()
    assert refused["code"] == "busy" and "open connections" in refused["message"]
    assert (await third.receive_output())["code"] == 4029
    await kept[0].disconnect()
    again = await connect(session, client=ATTACKER)  # a closed socket gives its place back
    assert (await first_frame(again))["type"] == "start"
    await receive_until_done(again)
    for ws in [kept[1], again]:
        await ws.disconnect()


async def test_it_lets_the_admin_override_one_users_limits(settings, mock_model):
    settings.CHAT_RATE_LIMIT = 100
    capped = await sync_to_async(signed_in_session)("capped", rate_limit=1)
    free = await sync_to_async(signed_in_session)("free")
    ws = await connect(capped)
    await finish(ws, await first_frame(ws))
    assert (await first_frame(ws))["code"] == "rate_limited"
    other = await connect(free)
    for _ in range(2):
        assert (await finish(other, await first_frame(other)))["status"] == "completed"
    for socket in (ws, other):
        await socket.disconnect()


async def test_it_counts_a_users_own_budget(settings, mock_model):
    model = "mock/gpt-4.1-mini"
    await sync_to_async(price)(model)
    settings.CHAT_DAILY_BUDGET_USD = Decimal("100")
    tight = await sync_to_async(signed_in_session)("tight", daily_budget_usd=Decimal("0.000001"))
    ws = await connect(tight)
    refused = await first_frame(ws)
    assert refused["code"] == "budget_exceeded" and "0.000001" in refused["message"]
    assert mock_model.stats()["requests"] == 0
    await ws.disconnect()
