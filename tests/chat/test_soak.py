"""A seeded soak: 300 generations over 30 sockets against the mock, with a random mix of faults,
stops and disconnects. Every request leaves exactly one record, nothing is left running or open
upstream, a finished reply is billed exactly what the mock sent, and a reply cut short (stop,
disconnect, a mid-stream fault) exactly what the relay read and stored, never more than was sent.

How many tokens were still in flight when a reply was cut short depends on how long the event loop
was busy elsewhere, which is the machine's load, not the relay's correctness: bench/soak.py
reports it; this test does not bound it.
"""

import asyncio
import random
from collections import Counter, defaultdict

import pytest
from channels.db import database_sync_to_async

from billing.models import UsageRecord
from chat.models import Message
from chat.relay import Ticker
from tests.conftest import connect, new_session
from tests.mock_fixtures import allow, upstream_pool

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.soak]

SEED = 20261126
SOCKETS, PER_SOCKET = 30, 10
OPENAI, ANTHROPIC = "mock/gpt-4.1-mini", "mockanthropic/claude-haiku-4-5"
FAULTS = ["429x1+retry_after=0.05", "500x1", "503x1", "400", "stall_first", "stall_mid", "drop_mid",
          "malformed", "error_mid", "no_usage", "no_done"]
SLOW = "+gap=8+tokens=40"


def plan(rng):
    """Return (model, action) for one generation: action is None, 'stop', 'stop_early' or 'disconnect'."""
    prefix = rng.choice([OPENAI, ANTHROPIC])
    roll = rng.random()
    if roll < 0.45:
        return prefix, None
    if roll < 0.70:
        return f"{prefix}+fault={rng.choice(FAULTS)}", None
    if roll < 0.85:
        return prefix + SLOW, "stop"
    if roll < 0.90:
        return prefix + "+ttft=400", "stop_early"
    return prefix + SLOW, "disconnect"


async def converse(session_key, rng, outcomes, index):
    """Run one socket's generations in turn, reconnecting after a disconnect."""
    ws = await connect(session_key)
    for turn in range(PER_SOCKET):
        model, action = plan(rng)
        tag = f"soak-{index}-{turn}"
        await ws.send_json_to({"type": "send", "content": tag, "model": model})
        start = await ws.receive_json_from(timeout=10)
        assert start["type"] == "start", start
        outcomes[tag] = {"message": start["message"], "action": action}
        if action == "stop_early":
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            await ws.send_json_to({"type": "stop"})
        elif action in ("stop", "disconnect"):
            wanted = rng.randint(1, 3)
            while wanted:
                frame = await ws.receive_json_from(timeout=10)
                if frame["type"] == "done":  # it ended first (a timeout on a loaded machine)
                    outcomes[tag]["done"] = frame["status"]
                    break
                wanted -= frame["type"] == "delta"
            else:
                if action == "disconnect":
                    await ws.disconnect()
                    ws = await connect(session_key)
                    continue
                await ws.send_json_to({"type": "stop"})
        while "done" not in outcomes[tag]:
            frame = await ws.receive_json_from(timeout=10)
            if frame["type"] == "done":
                outcomes[tag]["done"] = frame["status"]
                break
    await ws.disconnect()


async def test_it_leaves_one_record_per_request_and_nothing_open(settings, use_mock, transactional_db):
    settings.CHAT_RESUME_GRACE_S = 0  # a disconnect ends the reply at once (the resume soak has the grace period)
    settings.CHAT_FIRST_TOKEN_TIMEOUT = 1.0
    settings.CHAT_STALL_TIMEOUT = 0.5
    settings.CHAT_RETRIES = 2
    rng = random.Random(SEED)
    models = {plan(random.Random(seed))[0] for seed in range(2000)}
    allow(settings, *models, *(f"{p}+fault={f}" for p in (OPENAI, ANTHROPIC) for f in FAULTS))
    # Earlier tests' clients (one per event loop) may still hold idle connections to the shared mock.
    connections_before = use_mock.stats(log=False)["connections"]
    sessions = [await database_sync_to_async(new_session)() for _ in range(SOCKETS)]
    outcomes = {}
    rngs = [random.Random(rng.random()) for _ in range(SOCKETS)]
    await asyncio.wait_for(
        asyncio.gather(*(converse(s, r, outcomes, i) for i, (s, r) in enumerate(zip(sessions, rngs)))), 240
    )

    # Exactly one record per request.
    assert len(outcomes) == SOCKETS * PER_SOCKET
    records = {r.message_id: r async for r in UsageRecord.objects.all()}
    assert len(records) == await UsageRecord.objects.acount() == len(outcomes)
    assert {o["message"] for o in outcomes.values()} == set(records)
    statuses = Counter(r.status for r in records.values())
    assert statuses["completed"] and statuses["stopped"] and statuses["disconnected"] and statuses["failed"]
    for o in outcomes.values():
        record = records[o["message"]]
        if o["action"] == "disconnect" and "done" not in o:
            assert record.status in ("disconnected", "completed", "failed")
        elif o["action"] in ("stop", "stop_early") and record.status == "stopped":
            assert await record.__class__.objects.filter(pk=record.pk, abandonment__reason="stop").aexists()

    # No task left running, no upstream stream left open, no pooled connection left busy.
    assert await use_mock.await_idle(5)
    assert not Ticker.get().active
    leftover = [t for t in asyncio.all_tasks() if "Generation.run" in repr(t.get_coro()) and not t.done()]
    assert leftover == []
    idle, busy = upstream_pool()
    assert busy == [] and all(proto.is_connected() for proto in idle)
    assert use_mock.stats(log=False)["connections"] - connections_before <= len(idle)

    # Tokens billed: what the mock sent for a finished reply; what was read for one cut short, of which a
    # stopped reply stores only what was sent to the page (text read after the stop is not shown).
    sent = defaultdict(int)
    for entry in use_mock.stats()["log"]:
        sent[entry["tag"]] += entry["tokens_sent"]
    texts = {m.pk: m.content async for m in Message.objects.filter(pk__in=list(records))}
    for tag, o in outcomes.items():
        record = records[o["message"]]
        if record.status == "completed":
            assert record.completion_tokens == sent[tag], (tag, record.model)
        else:
            stored = len(texts[o["message"]].split())
            if record.status == "stopped" and o["action"] in ("stop", "stop_early"):
                assert stored <= record.completion_tokens <= sent[tag], (tag, record.model, record.status)
            else:
                assert record.completion_tokens == stored <= sent[tag], (tag, record.model, record.status)
