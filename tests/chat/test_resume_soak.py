"""A seeded soak of resumed replies: 240 replies over 24 people whose sockets drop and come back at
random points (and who sometimes stop). Each screen is kept as the page keeps it (connection.js's
Replies: duplicates dropped, a gap asks `resume`); at the end every screen's text equals the stored
reply and every request has exactly one record.
"""

import asyncio
import random

import pytest
from channels.db import database_sync_to_async

from billing.models import UsageRecord
from chat import markdown
from chat.models import Message
from tests.conftest import connect, new_session
from tests.mock_fixtures import allow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.soak]

SEED = 20261130
PEOPLE, PER_PERSON = 24, 10
MODEL = "mock/gpt-4.1-mini+ttft=10+gap=6+tokens=30"


class Screen:
    """One reply as a page shows it while it streams."""

    def __init__(self):
        self.seq, self.text, self.lengths = 0, "", {0: 0}

    def delta(self, frame):
        """Show a delta; return False on a gap (the page then asks `resume`)."""
        if frame["seq"] <= self.seq:
            return True
        if frame["seq"] > self.seq + 1:
            return False
        self.show(frame["seq"], frame["text"])
        return True

    def catchup(self, frame):
        if frame["seq"] <= self.seq:
            return True
        base = self.lengths.get(frame["after"])
        if frame["after"] > self.seq or base is None:
            return False
        self.show(frame["seq"], frame["text"][len(self.text) - base:])
        return True

    def show(self, seq, text):
        self.text += text
        self.seq = seq
        self.lengths[seq] = len(self.text)


async def person(session, rng, results, index):
    ws = await connect(session)
    for turn in range(PER_PERSON):
        tag = f"resume-soak-{index}-{turn}"
        await ws.send_json_to({"type": "send", "content": tag, "model": MODEL})
        start = await ws.receive_json_from(timeout=10)
        while start["type"] == "resumed":  # the end of the last reply's `resume` answer
            start = await ws.receive_json_from(timeout=10)
        assert start["type"] == "start", start
        screen, drops, stop_at = Screen(), 0, rng.choice([None] * 5 + [rng.randint(1, 25)])
        result = results[tag] = {"message": start["message"], "drops": 0, "resumed_live": True}
        while True:
            frame = await ws.receive_json_from(timeout=15)
            kind = frame["type"]
            if kind == "done":
                result.update(done=frame, screen=screen.text)
                break
            ok = True
            if kind == "delta":
                ok = screen.delta(frame)
            elif kind == "catchup":
                ok = screen.catchup(frame)
                result["resumed_live"] = True
            if not ok:
                await ws.send_json_to({"type": "resume", "conversation": start["conversation"],
                                       "have": {str(start["message"]): screen.seq}})
            if kind == "delta" and stop_at is not None and screen.seq >= stop_at:
                await ws.send_json_to({"type": "stop", "message": start["message"]})
                stop_at = None
            if kind == "delta" and drops < 3 and rng.random() < 0.08:
                drops += 1
                result["drops"] = drops
                result["resumed_live"] = False  # until a catch-up comes: the reply may end meanwhile
                await ws.disconnect()
                await asyncio.sleep(rng.uniform(0, 0.12))
                ws = await connect(session)
                await ws.send_json_to({"type": "resume", "conversation": start["conversation"],
                                       "have": {str(start["message"]): screen.seq}})
    await ws.disconnect()


async def test_it_ends_every_screen_equal_to_the_stored_reply_with_one_record_each(settings, use_mock):
    settings.CHAT_RESUME_GRACE_S = 3.0
    allow(settings, MODEL)
    rng = random.Random(SEED)
    sessions = [await database_sync_to_async(new_session)() for _ in range(PEOPLE)]
    results = {}
    await asyncio.wait_for(asyncio.gather(
        *(person(s, random.Random(rng.random()), results, i) for i, s in enumerate(sessions))), 240)

    assert len(results) == PEOPLE * PER_PERSON >= 200
    messages = {m.pk: m async for m in Message.objects.filter(role="assistant")}
    records = [r async for r in UsageRecord.objects.all()]
    assert sorted(r.message_id for r in records) == sorted(r["message"] for r in results.values())
    by_message = {r.message_id: r for r in records}
    dropped = sum(1 for r in results.values() if r["drops"])
    assert dropped >= 40, f"only {dropped} replies had their socket dropped: the soak proves little"
    statuses = set()
    for tag, result in results.items():
        message, record, done = messages[result["message"]], by_message[result["message"]], result["done"]
        assert message.status != "streaming", tag
        assert done["status"] == message.status == ("failed" if record.status == "failed" else message.status)
        statuses.add(record.status)
        assert done["html"] == markdown.render(message.content), tag
        if result["resumed_live"]:
            # It was watched to the end: the text streamed on the screen is the stored reply, exactly.
            assert result["screen"] == message.content, (tag, result["drops"])
        else:
            # It ended while the socket was away: the page shows the stored reply from `done`.
            assert result["screen"] == message.content[: len(result["screen"])], tag
    assert {"completed", "stopped"} <= statuses
    assert use_mock.stats(log=False)["requests"] == len(results)
    assert await use_mock.await_idle(10)
