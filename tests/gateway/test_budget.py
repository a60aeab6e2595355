"""A key's daily budget holds under concurrency: reserve the worst case first, settle the real cost after."""

import asyncio
from decimal import Decimal

import openai
from tests.gateway.conftest import PRICEY
from tests.processes import wait_for

HELLO = [{"role": "user", "content": "Say hello"}]


def test_it_never_lets_30_parallel_requests_spend_past_the_budget(api, make_key, mock_upstream):
    from billing.models import UsageRecord

    key = make_key(daily_budget_usd=Decimal("0.01"))

    async def one(sdk):
        try:
            stream = await sdk.chat.completions.create(model=PRICEY, messages=HELLO, max_tokens=60, stream=True)
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].choices[0].finish_reason == "stop"
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "insufficient_quota"
            assert int(exc.response.headers["retry-after"]) > 0
            return "refused"

    async def all_at_once():
        sdk = openai.AsyncOpenAI(base_url=api + "/v1", api_key=key, max_retries=0, timeout=60)
        async with sdk:
            return await asyncio.gather(*(one(sdk) for _ in range(30)))

    outcomes = asyncio.run(all_at_once())
    served = outcomes.count("ok")
    # Each reply costs ~$0.0011 ($20/Mtok, 50 tokens and a short prompt): 30 would spend ~$0.033.
    assert 5 <= served < 30 and outcomes.count("refused") == 30 - served
    records = wait_for(lambda: (lambda r: r if len(r) == served else None)(
        list(UsageRecord.objects.filter(api_key__prefix=key[:10]))), what="a record per served request")
    spent = sum(record.cost_usd for record in records)
    assert spent <= Decimal("0.01"), spent
    assert mock_upstream.stats()["requests"] == served  # refusals never reached the upstream
    from billing.models import Refusal

    assert Refusal.objects.filter(kind="budget_exceeded", scope="apikey", channel="api").exists()

