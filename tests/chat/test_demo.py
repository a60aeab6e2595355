import pytest

from billing.models import UsageRecord
from chat.models import Message
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_streams_the_demo_model(alice_session):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello there"})
    frames = await receive_until_done(ws)
    assert frames[0]["type"] == "start"
    deltas = [f["text"] for f in frames if f["type"] == "delta"]
    done = frames[-1]
    assert done["status"] == "completed"
    reply = await Message.objects.aget(pk=done["message"])
    assert "".join(deltas) == reply.content
    assert reply.content.startswith("Hello!")
    record = await UsageRecord.objects.aget(message_id=done["message"])
    assert record.status == "completed"
    assert record.completion_tokens == done["usage"]["completion_tokens"] > 0
    await ws.disconnect()
