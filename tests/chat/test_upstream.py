"""The real HTTP path: consumer -> httpx -> the mock upstream on a socket, in both wire protocols."""

import time
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from billing.models import ModelPrice, UsageRecord
from chat.models import Message
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow, upstream_pool

pytestmark = pytest.mark.django_db(transaction=True)

OPENAI = "mock/gpt-4.1-mini"
ANTHROPIC = "mockanthropic/claude-sonnet-4-5"


@pytest.fixture
def priced(transactional_db):
    """Return a function that gives a model id a price: $3 / $15 / $0.30 cached per million tokens."""

    def price(model):
        ModelPrice.objects.create(
            model=model, input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
            cached_input_per_mtok=Decimal("0.3"),
        )

    return sync_to_async(price)


async def chat(session, model, content="hello upstream", **extra):
    ws = await connect(session)
    await ws.send_json_to({"type": "send", "content": content, "model": model, **extra})
    frames = await receive_until_done(ws)
    await ws.disconnect()
    return frames


def only_log(mock):
    (entry,) = mock.stats()["log"]
    return entry


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_relays_a_stream_and_bills_the_reported_usage(alice_session, settings, use_mock, priced, model):
    allow(settings, model + "+tokens=30")
    await priced(model + "+tokens=30")
    frames = await chat(alice_session, model + "+tokens=30")
    deltas = "".join(f["text"] for f in frames if f["type"] == "delta")
    done = frames[-1]
    entry = only_log(use_mock)
    assert entry["tokens_sent"] == 30 and entry["status"] == "completed"
    assert len(deltas.split()) == 30
    reply = await Message.objects.aget(pk=done["message"])
    assert reply.content == deltas
    record = await UsageRecord.objects.aget()
    assert (record.prompt_tokens, record.completion_tokens) == (entry["prompt_tokens"], 30)
    assert record.estimated is False and record.status == "completed" and record.streamed
    assert record.upstream_model.endswith("-2025-04-14")
    expected = (Decimal(record.prompt_tokens) * 3 + Decimal(30) * 15) / 1_000_000
    assert record.cost_usd == expected
    assert done["cost_usd"] == f"{expected:.10f}"
    assert done["usage"] == {"prompt_tokens": record.prompt_tokens, "completion_tokens": 30, "estimated": False}


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_sends_the_system_prompt_and_history(alice_session, settings, use_mock, model):
    settings.CHAT_SYSTEM_PROMPT = "Be brief."
    allow(settings, model)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "first question", "model": model})
    conversation = (await receive_until_done(ws))[0]["conversation"]
    await ws.send_json_to({"type": "send", "content": "second", "model": model, "conversation": conversation})
    await receive_until_done(ws)
    await ws.disconnect()
    first, second = use_mock.stats()["log"]
    assert second["tag"] == "second"
    # The second request carries the first question, the first reply and the system prompt.
    assert second["prompt_tokens"] > first["prompt_tokens"] + 10


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_answers_without_streaming(alice_session, settings, use_mock, model):
    allow(settings, model)
    frames = await chat(alice_session, model, stream=False)
    assert [f["type"] for f in frames] == ["start", "delta", "done"]
    entry = only_log(use_mock)
    assert entry["stream"] is False
    record = await UsageRecord.objects.aget()
    assert record.streamed is False and record.status == "completed" and not record.estimated
    assert record.completion_tokens == entry["tokens_sent"] == len(frames[1]["text"].split())


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_prices_cached_prompt_tokens_at_the_cached_rate(alice_session, settings, use_mock, priced, model):
    allow(settings, model + "+cached=8")
    await priced(model + "+cached=8")
    await chat(alice_session, model + "+cached=8", content="x" * 200)
    record = await UsageRecord.objects.aget()
    assert record.cached_tokens == 8
    expected = (
        Decimal(record.prompt_tokens - 8) * 3 + Decimal(8) * Decimal("0.3") + Decimal(record.completion_tokens) * 15
    ) / 1_000_000
    assert record.cost_usd == expected


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_records_the_length_finish_reason(alice_session, settings, use_mock, model):
    settings.CHAT_MAX_TOKENS = 5
    allow(settings, model + "+tokens=20")
    await chat(alice_session, model + "+tokens=20")
    record = await UsageRecord.objects.aget()
    assert record.completion_tokens == 5
    assert record.finish_reason in ("length", "max_tokens")


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_closes_the_upstream_when_stopped_mid_stream(alice_session, settings, use_mock, priced, model):
    slow = model + "+gap=30+tokens=200"
    allow(settings, slow)
    await priced(slow)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "a long one please", "model": slow})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    first = await ws.receive_json_from(timeout=5)
    await ws.send_json_to({"type": "stop"})
    frames = [first] + await receive_until_done(ws)
    done = frames[-1]
    assert done["status"] == "stopped"
    # The upstream saw its connection closed early, well before its 200 tokens were sent.
    assert await use_mock.await_idle(2)
    entry = only_log(use_mock)
    assert entry["status"] == "closed_early" and entry["tokens_sent"] < 100
    assert use_mock.stats()["closed_early"] == 1
    reply = await Message.objects.aget(pk=done["message"])
    assert reply.status == "stopped" and reply.content == "".join(f["text"] for f in frames if f["type"] == "delta")
    record = await UsageRecord.objects.select_related("abandonment").aget()
    assert record.status == "stopped" and record.estimated
    assert record.completion_tokens == len(reply.content.split()) <= entry["tokens_sent"]
    assert record.cost_usd > 0
    assert record.abandonment.phase == "streaming" and record.abandonment.reason == "stop"
    await ws.disconnect()


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_closes_the_upstream_when_the_socket_closes(alice_session, settings, use_mock, model):
    settings.CHAT_RESUME_GRACE_S = 0  # no grace period: the disconnect ends the reply at once
    slow = model + "+gap=30+tokens=200"
    allow(settings, slow)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "a long one please", "model": slow})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    assert (await ws.receive_json_from(timeout=5))["type"] == "delta"
    await ws.disconnect()
    assert await use_mock.await_idle(2)
    assert only_log(use_mock)["status"] == "closed_early"
    record = await UsageRecord.objects.select_related("abandonment", "message").aget()
    assert record.status == "disconnected" and record.abandonment.reason == "disconnect"
    assert record.message.content and record.message.status == "stopped"


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_closes_the_upstream_when_stopped_before_the_first_token(alice_session, settings, use_mock, model):
    slow = model + "+ttft=5000"
    allow(settings, slow)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello", "model": slow})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    await sync_to_async(wait_for_request)(use_mock)
    await ws.send_json_to({"type": "stop"})
    done = (await receive_until_done(ws))[-1]
    assert done["status"] == "stopped" and done["ttft_ms"] is None
    assert await use_mock.await_idle(2)
    assert only_log(use_mock)["status"] == "closed_early"
    record = await UsageRecord.objects.select_related("abandonment").aget()
    assert record.abandonment.phase == "before_first_token"
    assert record.estimated and record.prompt_tokens > 0 and record.completion_tokens == 0
    await ws.disconnect()


def wait_for_request(mock, timeout=5):
    """Wait until the mock has a response in progress."""
    import time

    deadline = time.monotonic() + timeout
    while mock.stats()["open_streams"] == 0:
        assert time.monotonic() < deadline, "the request never reached the mock"
        time.sleep(0.01)


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_reuses_the_upstream_connection_for_the_next_request(alice_session, settings, use_mock, model):
    allow(settings, model)
    ws = await connect(alice_session)
    pooled = []
    for _ in range(3):
        await ws.send_json_to({"type": "send", "content": "again", "model": model})
        assert (await receive_until_done(ws))[-1]["status"] == "completed"
        idle, busy = upstream_pool()
        assert busy == []
        pooled.append(idle)
    await ws.disconnect()
    assert len(pooled[0]) == 1 and pooled[0] == pooled[1] == pooled[2]  # the same connection each time
    assert [entry["status"] for entry in use_mock.stats()["log"]] == ["completed"] * 3


@pytest.mark.parametrize("end", ["stop", "disconnect"])
@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
async def test_it_closes_the_upstream_at_once_and_never_pools_the_half_read_connection(
    alice_session, settings, use_mock, model, end
):
    settings.CHAT_RESUME_GRACE_S = 0  # no grace period: the disconnect ends the reply at once
    slow = model + "+gap=20+tokens=500"
    allow(settings, slow, model)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "a long one please", "model": slow})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    assert (await ws.receive_json_from(timeout=5))["type"] == "delta"
    _, (streaming,) = upstream_pool()
    since = time.time()
    if end == "stop":
        await ws.send_json_to({"type": "stop"})
    else:
        await ws.disconnect()
    # The close reaches the mock at once: not after the stream's 10 s, nor after a drain. Timed by
    # the mock itself (when its server saw the stream end), so no test thread's wake-up counts.
    assert await use_mock.await_idle(5), "the upstream connection was never closed"
    (entry,) = use_mock.stats()["log"]
    assert entry["status"] == "closed_early" and entry["ended_at"] - since < 0.1
    assert use_mock.stats()["closed_early"] == 1
    if end == "stop":
        assert (await receive_until_done(ws))[-1]["status"] == "stopped"
    else:
        ws = await connect(alice_session)
    # The next request cannot get the half-read connection back: the mock sees a new one.
    await ws.send_json_to({"type": "send", "content": "next", "model": model})
    assert (await receive_until_done(ws))[-1]["status"] == "completed"
    await ws.disconnect()
    idle, busy = upstream_pool()
    assert len(idle) == 1 and busy == [] and streaming not in idle and not streaming.is_connected()
    assert [entry["status"] for entry in use_mock.stats()["log"]] == ["closed_early", "completed"]
