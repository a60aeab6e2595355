"""Replies that survive the socket: sequence numbers, the grace period, resume, a second socket, shutdown."""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from billing.models import AbandonmentEvent, UsageRecord
from chat import replies
from chat.models import Message
from tests.conftest import connect, receive_until_done
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "mock/gpt-4.1-mini+gap=30+tokens=30"


@pytest.fixture
def slow(settings, use_mock):
    allow(settings, SLOW)
    settings.CHAT_RESUME_GRACE_S = 1.0
    return use_mock


async def receive_deltas(ws, count):
    """Return the first `count` frames after `start` (all deltas) and the start frame."""
    start = await ws.receive_json_from(timeout=5)
    assert start["type"] == "start", start
    frames = [await ws.receive_json_from(timeout=5) for _ in range(count)]
    assert [f["type"] for f in frames] == ["delta"] * count, frames
    return start, frames


def joined(frames):
    return "".join(f["text"] for f in frames if f["type"] in ("delta", "catchup"))


def sent_text(mock):
    [entry] = [e for e in mock.stats()["log"] if e["model"].startswith("gpt-4.1-mini+gap=30")]
    return entry


async def record_of(message_id):
    return await UsageRecord.objects.select_related("abandonment").aget(message_id=message_id)


async def test_it_numbers_every_delta_from_one(alice_session, slow):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "count", "model": SLOW})
    frames = await receive_until_done(ws)
    deltas = [f for f in frames if f["type"] == "delta"]
    assert [f["seq"] for f in deltas] == list(range(1, len(deltas) + 1))
    assert joined(frames) == sent_text(slow)["text"]


async def test_it_resumes_a_reply_on_a_new_socket_without_gaps_or_duplicates(alice_session, slow):
    first = await connect(alice_session)
    await first.send_json_to({"type": "send", "content": "resume me", "model": SLOW})
    start, before = await receive_deltas(first, 3)
    await first.disconnect()
    await asyncio.sleep(0.2)  # the reply goes on with nobody watching
    second = await connect(alice_session)
    await second.send_json_to(
        {"type": "resume", "conversation": start["conversation"], "have": {str(start["message"]): 3}})
    frames = await receive_until_done(second)
    catchup = frames[0]
    assert catchup["type"] == "catchup" and catchup["message"] == start["message"] and catchup["after"] == 3
    assert catchup["text"], "the reply went on while nobody watched: the catch-up has that text"
    deltas = [f for f in frames if f["type"] == "delta"]
    assert [f["seq"] for f in deltas] == list(range(catchup["seq"] + 1, catchup["seq"] + 1 + len(deltas)))
    assert frames[-1]["status"] == "completed"
    screen = joined(before) + joined(frames)
    assert screen == sent_text(slow)["text"]
    message = await Message.objects.aget(pk=start["message"])
    assert message.content == screen and message.status == "completed"
    assert await UsageRecord.objects.filter(message_id=start["message"]).acount() == 1
    assert (await record_of(start["message"])).status == "completed"
    assert frames[1] == {"type": "resumed", "conversation": start["conversation"], "messages": [start["message"]]}


async def test_it_resends_from_any_seq_and_sends_done_for_a_reply_that_ended(alice_session, slow):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "gap", "model": SLOW})
    start, before = await receive_deltas(ws, 4)
    # The page saw a gap after seq 2: it asks again on the same socket and gets 3, 4, … once.
    await ws.send_json_to({"type": "resume", "conversation": start["conversation"],
                           "have": {str(start["message"]): 2}})
    frames = await receive_until_done(ws)
    catchup = next(f for f in frames if f["type"] == "catchup")
    live = [f for f in frames if f["type"] == "delta" and f["seq"] > catchup["seq"]]
    assert joined(before[:2]) + catchup["text"] + joined(live) == sent_text(slow)["text"]
    assert [f["type"] for f in frames].count("done") == 1
    # Asked about after it ended: its `done`, from the database.
    await ws.send_json_to({"type": "resume", "conversation": start["conversation"],
                           "have": {str(start["message"]): 1}})
    done = await ws.receive_json_from(timeout=5)
    assert done["type"] == "done" and done["status"] == "completed" and done["message"] == start["message"]
    assert done["html"].startswith("<p>") and done["usage"]["completion_tokens"] == 30
    assert (await ws.receive_json_from(timeout=5))["type"] == "resumed"


async def test_it_lets_a_second_socket_watch_and_stop_the_reply_for_both(alice_session, slow):
    first = await connect(alice_session)
    await first.send_json_to({"type": "send", "content": "two tabs", "model": SLOW})
    start, _ = await receive_deltas(first, 2)
    second = await connect(alice_session)
    await second.send_json_to({"type": "resume", "conversation": start["conversation"], "have": {}})
    catchup = await second.receive_json_from(timeout=5)
    assert catchup["type"] == "catchup" and catchup["after"] == 0
    assert (await second.receive_json_from(timeout=5))["type"] == "resumed"
    live = await second.receive_json_from(timeout=5)
    assert live["type"] == "delta" and live["seq"] == catchup["seq"] + 1
    await second.send_json_to({"type": "stop"})
    for ws in (first, second):
        frames = await receive_until_done(ws)
        assert frames[-1]["status"] == "stopped"
    record = await record_of(start["message"])
    assert record.status == "stopped" and record.abandonment.reason == "stop"
    assert await UsageRecord.objects.filter(message_id=start["message"]).acount() == 1


async def test_it_stores_a_stopped_reply_as_far_as_the_stopping_page_shows_it(alice_session, slow, settings):
    settings.CHAT_FLUSH_MS = 200  # text waits for its frame: some was read, not yet sent, at the stop
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "stop there", "model": SLOW})
    start, shown = await receive_deltas(ws, 2)
    await asyncio.sleep(0.1)  # frame 3 may be sent meanwhile; the page, stopping, shows no more than 2
    await ws.send_json_to({"type": "stop", "message": start["message"], "seq": 2})
    frames = await receive_until_done(ws)
    assert frames[-1]["status"] == "stopped"
    message = await Message.objects.aget(pk=start["message"])
    assert message.content == joined(shown) and message.status == "stopped"
    assert frames[-1]["html"] == f"<p>{joined(shown).strip()}</p>\n"


async def test_it_neither_sends_nor_stores_text_read_after_a_stop(alice_session, slow, settings):
    settings.CHAT_FLUSH_MS = 200
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "stop now", "model": SLOW})
    start, before = await receive_deltas(ws, 2)
    await asyncio.sleep(0.1)  # a few tokens read and waiting for their frame
    await ws.send_json_to({"type": "stop"})
    frames = await receive_until_done(ws)
    assert frames[-1]["status"] == "stopped"
    message = await Message.objects.aget(pk=start["message"])
    assert message.content == joined(before) + joined(frames), "stored: exactly what was sent"
    assert await slow.await_idle(5)
    assert len(sent_text(slow)["text"]) > len(message.content), "what waited for its frame was dropped"


async def test_it_ends_an_unwatched_reply_when_the_grace_period_ends(alice_session, slow, settings):
    settings.CHAT_RESUME_GRACE_S = 0.4
    allow(settings, SLOW + "0")
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "gone", "model": SLOW + "0"})  # 300 tokens: outlasts the grace
    start, _ = await receive_deltas(ws, 2)
    left = time.time()
    await ws.disconnect()
    await asyncio.sleep(0.2)
    assert slow.stats(log=False)["open_streams"] == 1, "the upstream keeps generating during the grace period"
    assert await slow.await_idle(5)
    [entry] = slow.stats()["log"]
    assert entry["status"] == "closed_early"
    assert entry["ended_at"] - left >= 0.4, "the upstream was closed when the grace period ended, not before"
    record = await record_of(start["message"])
    assert record.status == "disconnected"
    event = record.abandonment
    assert event.reason == AbandonmentEvent.Reason.DISCONNECT and event.phase == AbandonmentEvent.Phase.STREAMING
    assert event.elapsed_ms < record.duration_ms - 300, "elapsed is told up to when the person left"
    assert 2 <= event.tokens_delivered < record.completion_tokens
    message = await Message.objects.aget(pk=start["message"])
    assert message.status == "stopped" and message.content == entry["text"][: len(message.content)]


async def test_it_keeps_others_out(alice_session, bob_session, slow):
    alice_ws = await connect(alice_session)
    await alice_ws.send_json_to({"type": "send", "content": "mine", "model": SLOW})
    start, _ = await receive_deltas(alice_ws, 1)
    bob_ws = await connect(bob_session)
    await bob_ws.send_json_to({"type": "resume", "conversation": start["conversation"],
                            "have": {str(start["message"]): 0}})
    assert await bob_ws.receive_json_from(timeout=5) == {
        "type": "resumed", "conversation": start["conversation"], "messages": []}
    await bob_ws.send_json_to({"type": "stop", "message": start["message"]})
    frames = await receive_until_done(alice_ws)
    assert frames[-1]["status"] == "completed"
    assert await bob_ws.receive_nothing(timeout=0.2)


@pytest.mark.parametrize("frame", [
    {"type": "resume", "conversation": "12"},
    {"type": "resume", "conversation": 1, "have": [1]},
    {"type": "resume", "conversation": 1, "have": {"x": 1}},
    {"type": "resume", "conversation": 1, "have": {"1": -1}},
    {"type": "stop", "message": "3"},
    {"type": "stop", "message": 3, "seq": -1},
    {"type": "stop", "message": 3, "seq": "2"},
])
async def test_it_refuses_a_bad_resume_or_stop_and_stays_usable(alice_session, frame):
    ws = await connect(alice_session)
    await ws.send_json_to(frame)
    error = await ws.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "bad_request"
    await ws.send_json_to({"type": "send", "content": "still here"})
    assert (await receive_until_done(ws))[-1]["status"] == "completed"


async def test_it_stores_the_replies_in_flight_on_shutdown(alice_session, slow):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "shutting down", "model": SLOW})
    start, before = await receive_deltas(ws, 2)
    await replies.drain(timeout=0.1)
    frames = await receive_until_done(ws)
    assert frames[-1]["status"] == "failed"
    message = await Message.objects.aget(pk=start["message"])
    assert message.content == joined(before) + joined(frames) and message.content
    record = await record_of(start["message"])
    assert record.status == "failed" and "restarted" in record.error
    assert await database_sync_to_async(lambda: not replies.in_flight)()
