"""Per-person limits: a message rate (rate_limited) and a daily budget (budget_exceeded)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from billing.models import UsageRecord
from chat.visitors import visitor_hash
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


async def send(ws, content="hello"):
    await ws.send_json_to({"type": "send", "content": content})
    return await ws.receive_json_from(timeout=5)


async def test_it_refuses_messages_past_the_rate_limit(alice_session, bob_session, settings):
    settings.CHAT_RATE_LIMIT = 2
    alice = await connect(alice_session)
    for _ in range(2):
        assert (await send(alice))["type"] == "start"
        await receive_until_done(alice)
    refused = await send(alice)
    assert refused["type"] == "error" and refused["code"] == "rate_limited"
    assert await UsageRecord.objects.acount() == 2
    bob = await connect(bob_session)  # another person has their own count
    assert (await send(bob))["type"] == "start"
    await receive_until_done(bob)
    await alice.disconnect()
    await bob.disconnect()


def spend(session_key, dollars, days_ago=0):
    UsageRecord.objects.create(
        visitor=visitor_hash(session_key), model="openai/gpt-4.1", status="completed", cost_usd=Decimal(dollars),
        started=timezone.now() - timedelta(days=days_ago), finished=timezone.now(),
    )


async def test_it_refuses_a_person_whose_daily_budget_is_spent(alice_session, bob_session, settings):
    settings.CHAT_DAILY_BUDGET_USD = Decimal("0.50")
    await sync_to_async(spend)(alice_session, "0.30")
    await sync_to_async(spend)(alice_session, "5.00", days_ago=2)  # an earlier day does not count
    alice = await connect(alice_session)
    assert (await send(alice))["type"] == "start"
    await receive_until_done(alice)
    await sync_to_async(spend)(alice_session, "0.20")
    refused = await send(alice)
    assert refused["code"] == "budget_exceeded" and "0.50" in refused["message"]
    bob = await connect(bob_session)
    assert (await send(bob))["type"] == "start"
    await receive_until_done(bob)
    await alice.disconnect()
    await bob.disconnect()
