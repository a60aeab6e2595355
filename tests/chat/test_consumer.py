"""The websocket consumer, driven with WebsocketCommunicator against the in-process demo model."""

import asyncio
import json
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from billing.models import AbandonmentEvent, ModelPrice, UsageRecord
from chat.models import Conversation, Message
from chat.relay import Ticker
from chat.visitors import visitor_hash
from chatsite.asgi import application
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


async def seed_the_demo_price():
    """Store the demo's price as migration 0002 seeds it (an earlier transactional test flushed it)."""
    await ModelPrice.objects.aget_or_create(
        model="demo/assistant", defaults={"input_per_mtok": 0, "output_per_mtok": 0, "cached_input_per_mtok": 0,
                                          "effective_from": datetime(2025, 1, 1, tzinfo=timezone.utc)})


async def expect_error(ws, code):
    frame = await ws.receive_json_from(timeout=5)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    return frame


async def assert_still_usable(ws):
    await ws.send_json_to({"type": "send", "content": "hello again"})
    frames = await receive_until_done(ws)
    assert frames[-1]["status"] == "completed"


async def test_it_refuses_a_socket_without_session_or_account(transactional_db):
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await ws.connect()
    assert connected  # accepted first, so the browser can read the close code
    assert (await ws.receive_output(2)) == {"type": "websocket.close", "code": 4001}


async def test_it_refuses_a_foreign_origin(alice_session):
    ws = WebsocketCommunicator(
        application, "/ws/chat/",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", f"sessionid={alice_session}".encode())],
    )
    connected, _ = await ws.connect()
    assert not connected


async def test_it_sends_start_deltas_and_one_done(alice_session):
    await seed_the_demo_price()
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "tell me about streaming", "model": "demo/assistant"})
    frames = await receive_until_done(ws)
    start, done = frames[0], frames[-1]
    assert start["type"] == "start" and start["model"] == "demo/assistant"
    assert all(f["type"] == "delta" and f["message"] == start["message"] for f in frames[1:-1])
    assert done["message"] == start["message"] and done["status"] == "completed"
    assert done["ttft_ms"] is not None and done["usage"]["estimated"] is False
    assert done["cost_usd"] == "0.0000000000"  # the demo model is priced, at exactly nothing
    assert "<ol>" in done["html"]
    await ws.receive_nothing(timeout=0.1)
    reply = await Message.objects.aget(pk=done["message"])
    assert reply.content == "".join(f["text"] for f in frames[1:-1])
    assert reply.status == Message.Status.COMPLETED
    await ws.disconnect()


async def test_it_coalesces_deltas_into_fewer_frames(alice_session, settings):
    settings.CHAT_DEMO_GAP_MS = 2
    settings.CHAT_FLUSH_MS = 50
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "tell me about streaming"})
    frames = await receive_until_done(ws)
    deltas = [f for f in frames if f["type"] == "delta"]
    record = await UsageRecord.objects.aget(message_id=frames[0]["message"])
    assert len(deltas) < record.completion_tokens / 3
    await ws.disconnect()


async def test_it_answers_without_streaming(alice_session):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello", "stream": False})
    frames = await receive_until_done(ws)
    assert [f["type"] for f in frames] == ["start", "delta", "done"]
    record = await UsageRecord.objects.aget(message_id=frames[0]["message"])
    assert record.streamed is False and record.status == "completed"
    await ws.disconnect()


async def test_it_continues_a_conversation(alice_session):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello"})
    first = await receive_until_done(ws)
    conversation = first[0]["conversation"]
    await ws.send_json_to({"type": "send", "content": "and django?", "conversation": conversation})
    second = await receive_until_done(ws)
    assert second[0]["conversation"] == conversation
    assert await Message.objects.filter(conversation_id=conversation).acount() == 4
    title = (await Conversation.objects.aget(pk=conversation)).title
    assert title == "hello"
    await ws.disconnect()


@pytest.mark.parametrize(
    "frame, code",
    [
        ("not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        (json.dumps({"type": "dance"}), "bad_request"),
        (json.dumps({"content": "no type"}), "bad_request"),
        (json.dumps({"type": "send", "content": ""}), "bad_request"),
        (json.dumps({"type": "send", "content": "   \n "}), "bad_request"),
        (json.dumps({"type": "send", "content": 42}), "bad_request"),
        (json.dumps({"type": "send", "content": "x" * 40_000}), "bad_request"),
        (json.dumps({"type": "send", "content": "hi", "model": "openai/gpt-99"}), "unknown_model"),
        (json.dumps({"type": "send", "content": "hi", "conversation": "12"}), "bad_request"),
        (json.dumps({"type": "send", "content": "hi", "stream": "yes"}), "bad_request"),
        (json.dumps({"type": "send", "content": "hi", "conversation": 999999}), "not_found"),
    ],
)
async def test_it_answers_a_bad_frame_with_an_error_and_stays_open(alice_session, frame, code):
    ws = await connect(alice_session)
    await ws.send_to(text_data=frame)
    error = await expect_error(ws, code)
    assert error["message"]
    await assert_still_usable(ws)
    await ws.disconnect()


async def test_it_answers_a_binary_frame_with_an_error(alice_session):
    ws = await connect(alice_session)
    await ws.send_to(bytes_data=b"\x00\x01")
    await expect_error(ws, "bad_request")
    await assert_still_usable(ws)
    await ws.disconnect()


async def test_it_refuses_a_second_send_while_one_is_in_flight(alice_session, settings):
    settings.CHAT_DEMO_GAP_MS = 20
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "tell me about streaming"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    await ws.send_json_to({"type": "send", "content": "me too"})
    frames = await receive_until_done(ws)
    assert [f["code"] for f in frames if f["type"] == "error"] == ["busy"]
    assert frames[-1]["status"] == "completed"
    assert await UsageRecord.objects.acount() == 1
    await ws.disconnect()


async def test_it_stops_mid_stream_and_keeps_the_partial_reply(alice_session, settings):
    settings.CHAT_DEMO_GAP_MS = 20
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "tell me about streaming"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    first = await ws.receive_json_from(timeout=5)
    assert first["type"] == "delta"
    await ws.send_json_to({"type": "stop"})
    frames = [first] + await receive_until_done(ws)
    done = frames[-1]
    assert done["status"] == "stopped" and done["usage"]["estimated"] is True
    reply = await Message.objects.aget(pk=done["message"])
    assert reply.status == "stopped"
    assert reply.content == "".join(f["text"] for f in frames if f["type"] == "delta")
    assert 0 < len(reply.content) < 200
    record = await UsageRecord.objects.select_related("abandonment").aget(message_id=done["message"])
    assert record.status == "stopped" and record.estimated
    assert record.abandonment.reason == "stop" and record.abandonment.phase == "streaming"
    await assert_still_usable(ws)
    await ws.disconnect()


async def test_it_records_a_stop_before_the_first_token(alice_session, settings):
    settings.CHAT_DEMO_TTFT_MS = 2000
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "hello"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    await ws.send_json_to({"type": "stop"})
    done = (await receive_until_done(ws))[-1]
    assert done["status"] == "stopped" and done["ttft_ms"] is None
    event = await AbandonmentEvent.objects.select_related("record").aget()
    assert (event.reason, event.phase, event.tokens_delivered) == ("stop", "before_first_token", 0)
    assert event.record.prompt_tokens > 0 and event.record.completion_tokens == 0
    await ws.disconnect()


async def test_it_records_a_disconnect_mid_stream(alice_session, settings):
    settings.CHAT_DEMO_GAP_MS = 20
    settings.CHAT_RESUME_GRACE_S = 0  # no grace period: the disconnect ends the reply at once
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "tell me about streaming"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "start"
    assert (await ws.receive_json_from(timeout=5))["type"] == "delta"
    await ws.disconnect()
    record = await UsageRecord.objects.select_related("abandonment", "message").aget()
    assert record.status == "disconnected" and record.estimated
    assert record.abandonment.reason == "disconnect" and record.abandonment.phase == "streaming"
    assert record.message.status == "stopped" and record.message.content
    assert not Ticker.get().active


async def test_it_keeps_two_sessions_apart(alice_session, bob_session):
    alice_ws = await connect(alice_session)
    await alice_ws.send_json_to({"type": "send", "content": "alice's secret plan"})
    conversation = (await receive_until_done(alice_ws))[0]["conversation"]
    bob_ws = await connect(bob_session)
    await bob_ws.send_json_to({"type": "send", "content": "let me in", "conversation": conversation})
    await expect_error(bob_ws, "not_found")
    await bob_ws.send_json_to({"type": "send", "content": "bob's own"})
    bobs = (await receive_until_done(bob_ws))[0]["conversation"]
    assert bobs != conversation
    assert [c.pk async for c in Conversation.objects.owned_by(None, visitor_hash(alice_session))] == [conversation]
    assert [c.pk async for c in Conversation.objects.owned_by(None, visitor_hash(bob_session))] == [bobs]
    assert await Message.objects.filter(conversation_id=conversation).acount() == 2
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_it_queues_then_refuses_when_at_capacity(alice_session, bob_session, settings):
    settings.CHAT_MAX_CONCURRENT = 1
    settings.CHAT_QUEUE_TIMEOUT = 0.2
    settings.CHAT_DEMO_GAP_MS = 50
    alice_ws = await connect(alice_session)
    bob_ws = await connect(bob_session)
    await alice_ws.send_json_to({"type": "send", "content": "tell me about streaming"})
    assert (await alice_ws.receive_json_from(timeout=5))["type"] == "start"
    await bob_ws.send_json_to({"type": "send", "content": "hello"})
    await expect_error(bob_ws, "busy")
    await alice_ws.send_json_to({"type": "stop"})
    await receive_until_done(alice_ws)
    await assert_still_usable(bob_ws)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_it_lets_a_queued_request_through_when_a_slot_frees(alice_session, bob_session, settings):
    settings.CHAT_MAX_CONCURRENT = 1
    settings.CHAT_QUEUE_TIMEOUT = 5
    alice_ws = await connect(alice_session)
    bob_ws = await connect(bob_session)
    await alice_ws.send_json_to({"type": "send", "content": "hello"})
    await bob_ws.send_json_to({"type": "send", "content": "hello"})
    assert (await receive_until_done(alice_ws))[-1]["status"] == "completed"
    assert (await receive_until_done(bob_ws))[-1]["status"] == "completed"
    await asyncio.gather(alice_ws.disconnect(), bob_ws.disconnect())


async def test_it_refuses_a_cookie_that_names_no_session(transactional_db):
    ws = WebsocketCommunicator(
        application, "/ws/chat/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", b"sessionid=forged123")],
    )
    connected, _ = await ws.connect()
    assert connected  # accepted first, so the browser can read the close code
    assert (await ws.receive_output(2)) == {"type": "websocket.close", "code": 4001}


def signed_in(username):
    """Return (user, session key) of a person signed in through the login machinery."""
    user = User.objects.create_user(username, password="pw")
    client = Client()
    client.force_login(user)
    return user, client.cookies["sessionid"].value


async def test_it_gives_a_signed_in_user_their_own_conversations(transactional_db):
    alice, key = await sync_to_async(signed_in)("alice")
    ws = await connect(key)
    await ws.send_json_to({"type": "send", "content": "hello as alice"})
    conversation = (await receive_until_done(ws))[0]["conversation"]
    await ws.disconnect()
    stored = await Conversation.objects.aget(pk=conversation)
    assert stored.user_id == alice.pk and stored.visitor == ""
    record = await UsageRecord.objects.aget()
    assert record.user_id == alice.pk


async def test_it_names_the_new_conversation_in_start_and_sends_the_figures_in_done(alice_session):
    await seed_the_demo_price()
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "send", "content": "  A   title\nfrom the first message "})
    frames = await receive_until_done(ws)
    await ws.disconnect()
    assert frames[0]["title"] == "A title from the first message"
    done = frames[-1]
    record = await UsageRecord.objects.aget(message_id=done["message"])
    assert done["figures"]["model"] == "demo/assistant" and done["figures"]["ttft"] == f"{record.ttft_ms} ms"
    assert done["figures"]["tokens"] == f"{record.prompt_tokens} in · {record.completion_tokens} out"
    assert done["figures"]["cost"] == "$0.00"  # the demo model is priced, at exactly nothing


async def test_it_sends_no_usage_or_cost_to_whom_chat_show_usage_hides_them(transactional_db, settings):
    settings.CHAT_SHOW_USAGE = "staff"
    for name, staff in (("grace", False), ("heidi", True)):
        user, key = await sync_to_async(signed_in)(name)
        user.is_staff = staff
        await user.asave(update_fields=["is_staff"])
        ws = await connect(key)
        await ws.send_json_to({"type": "send", "content": "what did that cost?"})
        done = (await receive_until_done(ws))[-1]
        await ws.disconnect()
        assert ("usage" in done and "cost_usd" in done) is staff
        assert {"tokens", "speed", "cost"} <= done["figures"].keys() if staff else done["figures"].keys() == {"model", "ttft"}
        assert await UsageRecord.objects.filter(user=user, status="completed").acount() == 1  # billed all the same


async def test_an_open_socket_waits_in_its_own_task_only(alice_session):
    """The consumer awaits its socket's events itself: no receive task of Channels' beside its own."""
    before = asyncio.all_tasks()
    ws = await connect(alice_session)
    await asyncio.sleep(0.05)
    added = asyncio.all_tasks() - before
    assert len(added) == 1, added  # the application's (the socket's) task
    await ws.send_json_to({"type": "send", "content": "still answered", "model": "demo/assistant"})
    frames = await receive_until_done(ws)
    assert frames[-1]["status"] == "completed"
    await ws.disconnect()
