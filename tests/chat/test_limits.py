"""Per-person limits: a message rate (rate_limited) and a daily budget (budget_exceeded).

The attacks on them (cookie-dropping, parallel sockets, per-address limits) are in test_guards.py.
"""

from decimal import Decimal

import pytest

from billing.models import ModelPrice, UsageRecord
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
