"""A page open on a conversation hears of a reply another tab starts in it, watches it live, and can stop it."""

import asyncio

import pytest
from channels.layers import InMemoryChannelLayer

from billing.models import UsageRecord
from chat import follows, replies
from tests.chat.test_resume import SLOW, joined, receive_deltas, record_of, sent_text, slow  # noqa: F401
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


async def conversation_of(session):
    """Return the id of a new conversation of the person with `session` (one short reply in it)."""
    ws = await connect(session)
    await ws.send_json_to({"type": "send", "content": "first"})
    frames = await receive_until_done(ws)
    await ws.disconnect()
    return frames[0]["conversation"]


async def test_it_tells_a_follower_of_a_reply_started_elsewhere_which_it_then_watches_and_stops(alice_session, slow):
    conversation = await conversation_of(alice_session)
    watcher = await connect(alice_session)
    await watcher.send_json_to({"type": "follow", "conversation": conversation})
    sender = await connect(alice_session)
    await sender.send_json_to({"type": "follow", "conversation": conversation})
    await sender.send_json_to({"type": "send", "content": "from the other tab", "model": SLOW,
                               "conversation": conversation})
    start, _ = await receive_deltas(sender, 2)
    told = await watcher.receive_json_from(timeout=5)
    assert told == {"type": "reply", "conversation": conversation, "message": start["message"], "model": SLOW,
                    "content": "from the other tab"}
    await watcher.send_json_to({"type": "resume", "conversation": conversation, "have": {str(start["message"]): 0}})
    catchup = await watcher.receive_json_from(timeout=5)
    assert catchup["type"] == "catchup" and catchup["message"] == start["message"] and catchup["after"] == 0
    assert (await watcher.receive_json_from(timeout=5))["type"] == "resumed"
    live = await watcher.receive_json_from(timeout=5)
    assert live == {"type": "delta", "message": start["message"], "seq": catchup["seq"] + 1, "text": live["text"]}
    await watcher.send_json_to({"type": "stop", "message": start["message"]})
    screens = {}
    for name, ws in (("watcher", watcher), ("sender", sender)):
        frames = await receive_until_done(ws)
        assert frames[-1]["status"] == "stopped"
        assert [f["type"] for f in frames].count("done") == 1
        screens[name] = frames
    record = await record_of(start["message"])
    assert record.status == "stopped" and record.abandonment.reason == "stop"
    assert await UsageRecord.objects.filter(message_id=start["message"]).acount() == 1
    # The sender heard no `reply` of its own.
    assert "reply" not in [f["type"] for f in screens["sender"]]


async def test_it_tells_only_the_person_s_own_followers_of_that_conversation(alice_session, bob_session, slow):
    conversation = await conversation_of(alice_session)
    other = await conversation_of(alice_session)
    bob = await connect(bob_session)
    await bob.send_json_to({"type": "follow", "conversation": conversation})
    error = await bob.receive_json_from(timeout=5)
    assert error == {"type": "error", "code": "not_found", "message": "No such conversation."}
    elsewhere = await connect(alice_session)
    await elsewhere.send_json_to({"type": "follow", "conversation": other})
    sender = await connect(alice_session)
    await sender.send_json_to({"type": "send", "content": "private", "model": SLOW, "conversation": conversation})
    assert (await receive_until_done(sender))[-1]["status"] == "completed"
    assert await bob.receive_nothing(timeout=0.2)
    assert await elsewhere.receive_nothing(timeout=0.2)


async def test_it_stops_telling_a_socket_that_follows_none_or_closed(alice_session, slow):
    conversation = await conversation_of(alice_session)
    quiet, gone = await connect(alice_session), await connect(alice_session)
    for ws in (quiet, gone):
        await ws.send_json_to({"type": "follow", "conversation": conversation})
    await quiet.send_json_to({"type": "follow", "conversation": None})
    await gone.disconnect()
    sender = await connect(alice_session)
    await sender.send_json_to({"type": "send", "content": "nobody", "model": SLOW, "conversation": conversation})
    frames = await receive_until_done(sender)
    assert joined(frames) == sent_text(slow)["text"]
    assert await quiet.receive_nothing(timeout=0.2)
    assert conversation not in follows.followers


async def test_it_refuses_a_bad_follow_and_stays_usable(alice_session):
    ws = await connect(alice_session)
    await ws.send_json_to({"type": "follow", "conversation": "12"})
    error = await ws.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == "bad_request"
    await ws.send_json_to({"type": "send", "content": "still here"})
    assert (await receive_until_done(ws))[-1]["status"] == "completed"


async def test_the_hub_renews_the_groups_it_follows_while_no_message_arrives():
    # channels-redis forgets a group's members after a day, and its receive() returns only with a message:
    # a tab following a quiet conversation must stay joined by a timer, not by traffic.
    loop = asyncio.get_running_loop()
    layer = InMemoryChannelLayer()
    hub = replies.Hub(loop, layer)
    hub.REJOIN_S = 0.2
    hub.ready = loop.create_task(hub.open())
    follows.followers[7].add(consumer := object())
    try:
        hub.follow(7)
        group = follows.group_of(7)
        async with asyncio.timeout(5):
            while hub.channel not in layer.groups.get(group, {}):
                await asyncio.sleep(0.01)
            joined = layer.groups[group][hub.channel]
            while layer.groups[group][hub.channel] == joined:  # no message ever reaches the hub's channel
                await asyncio.sleep(0.05)
    finally:
        follows.followers[7].discard(consumer)
        del follows.followers[7]
        await hub.ready
        for task in (hub.task, hub.renewer):
            task.cancel()


class CancelTurnedToKeyError(InMemoryChannelLayer):
    """A layer whose receive, when cancelled, raises another error instead (a clean-up that fails on the
    way out: here a KeyError)."""

    async def receive(self, channel):
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            raise KeyError(channel) from None


async def test_the_hub_ends_when_cancelled_even_if_the_layer_turns_the_cancellation_into_an_error():
    # Otherwise the hub's retry loop swallows it, and a loop that cancels and awaits its tasks at close
    # (asyncio.run, the test runner's loop) waits for the hub for ever.
    loop = asyncio.get_running_loop()
    hub = replies.Hub(loop, CancelTurnedToKeyError())
    hub.ready = loop.create_task(hub.open())
    await hub.ready
    hub.renewer.cancel()
    await asyncio.sleep(0.05)  # the hub is waiting in receive()
    hub.task.cancel()
    done, _ = await asyncio.wait({hub.task}, timeout=2)
    assert hub.task in done and hub.task.cancelled()


class CancelLostOnce(InMemoryChannelLayer):
    """A layer whose receive loses the first cancellation and goes on receiving, as redis-py's retry does
    when its read timeout fires in the same turn as the cancel."""

    lost = 0

    async def receive(self, channel):
        while True:
            try:
                return await super().receive(channel)
            except asyncio.CancelledError:
                if self.lost:
                    raise
                self.lost += 1


async def test_closing_the_hub_repeats_a_cancellation_the_layer_lost():
    loop = asyncio.get_running_loop()
    layer = CancelLostOnce()
    hub = replies.Hub(loop, layer)
    replies.Hub._hubs[loop] = hub
    hub.ready = loop.create_task(hub.open())
    await hub.ready
    await asyncio.sleep(0.05)  # the hub is waiting in receive()
    async with asyncio.timeout(5):
        await hub.close()
    assert layer.lost == 1
    assert hub.task.cancelled() and hub.renewer.cancelled()
    assert loop not in replies.Hub._hubs
