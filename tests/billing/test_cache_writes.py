"""Cache writes priced at their own rate, and the upstream's own cost kept beside ours, over the real HTTP path."""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from billing.models import ModelPrice, UsageRecord
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

INPUT, OUTPUT, CACHE_READ, CACHE_WRITE = Decimal("3"), Decimal("15"), Decimal("0.3"), Decimal("3.75")


@sync_to_async
def price(model):
    ModelPrice.objects.create(
        model=model, input_per_mtok=INPUT, output_per_mtok=OUTPUT,
        cached_input_per_mtok=CACHE_READ, cache_write_per_mtok=CACHE_WRITE,
    )


async def chat(session, model, **extra):
    ws = await connect(session)
    await ws.send_json_to({"type": "send", "content": "y" * 400, "model": model, **extra})
    frames = await receive_until_done(ws)
    await ws.disconnect()
    return frames


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["mockanthropic/claude-sonnet-4-5", "mock/claude-sonnet-4-5"])
async def test_it_prices_cache_writes_at_the_cache_write_rate(alice_session, settings, use_mock, model, stream):
    model += "+cached=20+cache_write=40+tokens=9"
    allow(settings, model)
    await price(model)
    frames = await chat(alice_session, model, stream=stream)
    (sent,) = use_mock.stats()["log"]
    assert (sent["cached"], sent["cache_write"], sent["tokens_sent"]) == (20, 40, 9)
    plain = sent["prompt_tokens"] - 20 - 40
    expected = (plain * INPUT + 20 * CACHE_READ + 40 * CACHE_WRITE + 9 * OUTPUT) / 1_000_000
    record = await UsageRecord.objects.aget()
    assert (record.prompt_tokens, record.cached_tokens, record.cache_write_tokens) == (sent["prompt_tokens"], 20, 40)
    assert abs(record.cost_usd - expected) < Decimal("1e-10")
    assert frames[-1]["cost_usd"] == f"{expected:.10f}"
    # At the plain input rate the same request costs less: the difference is what cache writes add.
    assert record.cost_usd - (sent["prompt_tokens"] - 20) * INPUT / 1_000_000 - 20 * CACHE_READ / 1_000_000 > 0


async def test_it_keeps_the_upstreams_reported_cost_beside_ours(alice_session, settings, use_mock):
    model = "mock/gpt-4.1-mini+cost=0.0012345"
    allow(settings, model)
    await price(model)
    await chat(alice_session, model)
    record = await UsageRecord.objects.aget()
    assert record.upstream_cost_usd == Decimal("0.0012345")
    assert record.cost_usd is not None and record.cost_usd != record.upstream_cost_usd


async def test_it_stores_no_upstream_cost_when_none_is_reported(alice_session, settings, use_mock):
    allow(settings, "mock/gpt-4.1-mini")
    await chat(alice_session, "mock/gpt-4.1-mini")
    record = await UsageRecord.objects.aget()
    assert record.upstream_cost_usd is None and record.cache_write_tokens == 0


def test_it_charges_cache_writes_at_the_input_rate_when_no_cache_write_rate_is_set():
    price = ModelPrice(input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"), cached_input_per_mtok=Decimal("0.5"))
    assert price.cost(1000, 10, cached_tokens=100, cache_write_tokens=300) == Decimal("0.0019300000")
    price.cache_write_per_mtok = Decimal("4")
    assert price.cost(1000, 10, cached_tokens=100, cache_write_tokens=300) == Decimal("0.0025300000")
