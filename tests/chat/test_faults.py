"""Every way an upstream fails, in both wire protocols: the person is told, the socket stays usable,
and the one usage record has the right status, retries, usage and cost."""

import asyncio
import socket
from dataclasses import dataclass
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from billing.models import ModelPrice, UsageRecord
from chat.models import Message
from chat.providers.http import close_client
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

PREFIXES = ["mock/gpt-4.1-mini", "mockanthropic/claude-sonnet-4-5"]
TOKENS = 12  # the mock fixture's reply length
AFTER = 3  # tokens the mock sends before a mid-stream fault


@dataclass
class Expect:
    status: str  # the record's
    retries: int = 0
    code: str = ""  # the error frame's, when the reply failed
    estimated: bool = False
    completion: int | None = TOKENS
    billed_prompt: bool = True  # prompt tokens on the record (0 when the upstream never accepted it)
    message: str = ""  # in the error text


FAULTS = {
    "429x1+retry_after=0.2": Expect("completed", retries=1),
    "429+retry_after=0.05": Expect("failed", retries=2, code="rate_limited", completion=0, billed_prompt=False),
    "500x1": Expect("completed", retries=1),
    "502x1": Expect("completed", retries=1),
    "503x1": Expect("completed", retries=1),
    "504x1": Expect("completed", retries=1),
    "500": Expect("failed", retries=2, code="upstream_error", completion=0, billed_prompt=False, message="500"),
    "400": Expect("failed", code="upstream_error", completion=0, billed_prompt=False, message="400"),
    "401": Expect("failed", code="upstream_error", completion=0, billed_prompt=False, message="401"),
    "drop_before": Expect("failed", retries=2, code="upstream_error", completion=0, billed_prompt=False),
    "stall_first": Expect("failed", code="upstream_error", estimated=True, completion=0, message="no reply within"),
    "stall_mid": Expect("failed", code="upstream_error", estimated=True, completion=AFTER, message="stalled"),
    "drop_mid": Expect("failed", code="upstream_error", estimated=True, completion=AFTER),
    "malformed": Expect("failed", code="upstream_error", estimated=True, completion=AFTER, message="malformed"),
    "error_mid": Expect("failed", code="upstream_error", estimated=True, completion=AFTER),
    "no_usage": Expect("completed", estimated=True),
    "no_done": Expect("completed"),
}


def fast_timeouts(settings, fault):
    """Shorten the timeout a stall fault waits for; leave the others' timeouts at their defaults.

    A short first-token timeout on every fault would also time out a retried request (the retry
    wait counts towards it) whenever the machine is slow: that tested the machine, not the retry.
    """
    settings.CHAT_RETRIES = 2
    if fault == "stall_first":
        # Counted from the send, through storing the message and the upstream's answer: long
        # enough for the upstream to accept the request on a loaded machine (the record then
        # bills the prompt), short enough to keep the suite fast.
        settings.CHAT_FIRST_TOKEN_TIMEOUT = 2
    elif fault == "stall_mid":
        settings.CHAT_STALL_TIMEOUT = 0.6


def price(model):
    ModelPrice.objects.create(model=model, input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_it_survives_the_fault(alice_session, settings, use_mock, prefix, fault):
    expect = FAULTS[fault]
    fast_timeouts(settings, fault)
    model = f"{prefix}+fault={fault}"
    allow(settings, model, prefix)
    await sync_to_async(price)(model)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello, how are you today?", "model": model})
    frames = await receive_until_done(ws, timeout=10)
    done = frames[-1]
    errors = [f for f in frames if f["type"] == "error"]
    deltas = "".join(f["text"] for f in frames if f["type"] == "delta")

    # What the person sees.
    if expect.status == "completed":
        assert done["status"] == "completed" and not errors
    else:
        assert done["status"] == "failed"
        assert [e["code"] for e in errors] == [expect.code]
        assert expect.message.lower() in errors[0]["message"].lower()
    # What is stored and billed.
    reply = await Message.objects.aget(pk=done["message"])
    assert reply.content == deltas
    assert reply.status == ("completed" if expect.status == "completed" else "failed")
    record = await UsageRecord.objects.aget()
    assert record.status == expect.status
    assert record.retries == expect.retries
    assert record.estimated is expect.estimated
    assert record.completion_tokens == expect.completion == len(deltas.split())
    assert (record.prompt_tokens > 0) is expect.billed_prompt
    assert record.cost_usd == (Decimal(record.prompt_tokens) * 3 + Decimal(record.completion_tokens) * 15) / 10**6
    assert (record.error != "") is (expect.status == "failed")
    if prefix.startswith("mockanthropic") and expect.estimated and expect.completion:
        # Anthropic reported the input in message_start: only the output is estimated.
        assert record.prompt_tokens == use_mock.stats()["log"][-1]["prompt_tokens"]
    if fault.startswith("429x1"):
        assert record.duration_ms >= 200  # Retry-After was honoured
    # Nothing is left streaming upstream, and the socket still works.
    assert await use_mock.await_idle(2)
    await ws.send_json_to({"type": "send", "content": "still there?", "model": prefix})
    assert (await receive_until_done(ws))[-1]["status"] == "completed"
    await ws.disconnect()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_it_retries_then_fails_when_the_upstream_refuses_connections(alice_session, settings, api):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CHAT_PROVIDERS = {
        **settings.CHAT_PROVIDERS, "down": {"api": api, "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k"}
    }
    allow(settings, "down/model")
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "anyone?", "model": "down/model"})
    frames = await receive_until_done(ws)
    assert frames[-2]["type"] == "error" and "connect" in frames[-2]["message"].lower()
    assert frames[-1]["status"] == "failed"
    record = await UsageRecord.objects.aget()
    assert (record.status, record.retries, record.prompt_tokens, record.estimated) == ("failed", 2, 0, False)
    await ws.disconnect()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_an_upstream_that_never_answers_ends_at_the_first_token_timeout(alice_session, settings, api):
    """It takes the request and sends nothing, not even a status line. No read timeout is set on the
    upstream's socket (chat/providers/http.py): the relay's own first-token limit ends the reply."""
    taken = []

    async def silent(reader, writer):
        taken.append(await reader.read(65536))
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings.CHAT_FIRST_TOKEN_TIMEOUT = 1.5
    settings.CHAT_PROVIDERS = {
        **settings.CHAT_PROVIDERS, "silent": {"api": api, "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k"}
    }
    allow(settings, "silent/model")
    try:
        ws = await connect(alice_session)
        await ws.send_json_to({"type": "send", "content": "anyone?", "model": "silent/model"})
        frames = await receive_until_done(ws, timeout=10)
        assert frames[-2]["type"] == "error" and "no reply within" in frames[-2]["message"].lower()
        assert frames[-1]["status"] == "failed"
        assert taken and taken[0].startswith(b"POST ")
        record = await UsageRecord.objects.aget()
        assert (record.status, record.retries) == ("failed", 0)
        await ws.disconnect()
    finally:
        server.close()
        await close_client()


async def test_it_drops_the_oldest_turns_that_do_not_fit(alice_session, settings, use_mock):
    settings.CHAT_MAX_HISTORY_CHARS = 300
    allow(settings, "mock/m")
    ws = await connect(alice_session)
    conversation = None
    for i in range(4):
        await ws.send_json_to(
            {"type": "send", "content": f"question {i} " + "x" * 100, "model": "mock/m", "conversation": conversation}
        )
        conversation = (await receive_until_done(ws))[0]["conversation"]
    await ws.disconnect()
    records = [r async for r in UsageRecord.objects.order_by("started")]
    assert records[0].history_dropped == 0
    assert records[-1].history_dropped > 0
    # What was sent stays under the limit, whatever the conversation's length.
    sizes = [entry["prompt_tokens"] for entry in use_mock.stats()["log"]]
    assert max(sizes) * 4 <= 300 + len(settings.CHAT_SYSTEM_PROMPT) + 8
