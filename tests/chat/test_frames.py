"""Hostile frames: deep nesting and lone surrogates are bad_request; a consumer failure ends the reply as a disconnect."""

import json

import pytest

from billing.models import UsageRecord
from chat import protocol
from chat.models import Message
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "mock/gpt-4.1-mini+gap=30+tokens=40"


async def test_it_refuses_deeply_nested_frames_and_keeps_the_reply_in_flight(alice_session, settings, use_mock):
    allow(settings, SLOW)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello", "model": SLOW})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    for frame in ('{"type": "send", "content": "x", "x": ' + "[" * 50_000 + "]" * 50_000 + "}",
                  "[" * 150_000,  # not even valid JSON: refused before the parser sees it
                  json.dumps({"type": "send", "content": "x", "extra": [[[[[[[[[["x"]]]]]]]]]]})):
        await ws.send_to(text_data=frame)
    frames = await receive_until_done(ws, timeout=10)
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["bad_request"] * 3 and "nested too deeply" in errors[0]["message"]
    assert frames[-1]["status"] == "completed"  # the reply in flight went on
    await ws.send_json_to({"type": "send", "content": "still [here] {with} [[brackets]]", "model": SLOW})
    assert (await receive_until_done(ws, timeout=10))[-1]["status"] == "completed"
    await ws.disconnect()


async def test_it_refuses_a_lone_surrogate(alice_session):
    ws = await connect(alice_session)
    await ws.send_to(text_data='{"type": "send", "content": "hi \\ud800 there"}')
    error = await ws.receive_json_from()
    assert error["code"] == "bad_request" and "surrogate" in error["message"]
    assert not await Message.objects.aexists()
    await ws.send_to(text_data='{"type": "send", "content": "a real pair \\ud83d\\ude00"}')
    assert (await receive_until_done(ws))[-1]["status"] == "completed"
    await ws.disconnect()


async def test_it_ends_the_reply_as_a_disconnect_when_the_consumer_fails(alice_session, settings, use_mock, monkeypatch):
    allow(settings, SLOW)
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello", "model": SLOW})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    assert (await ws.receive_json_from(timeout=5))["type"] == "delta"  # the upstream is streaming
    parse = protocol.parse

    def broken(text):
        if "boom" in (text or ""):
            raise RuntimeError("a bug in the consumer")
        return parse(text)

    monkeypatch.setattr(protocol, "parse", broken)
    await ws.send_to(text_data='{"type": "boom"}')
    closed = None
    for _ in range(200):  # deltas already on their way, then the close
        output = await ws.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            closed = output
            break
    assert closed is not None and closed["code"] == 1011
    record = await UsageRecord.objects.aget()
    assert record.status == "disconnected"  # not billed as completed, and written
    assert await use_mock.await_idle(5) and use_mock.stats()["closed_early"] == 1  # the upstream was closed
