"""Resume and shutdown on real daphne processes: a reply continues on another process, and survives SIGTERM."""

import threading

import pytest

from tests.live.client import Chat, new_session
from tests.live.conftest import FAST, MODELS, SETTINGS, SLOW
from tests.live.servers import Server, server_env

LONG = "mock/long+ttft=50+gap=40+tokens=400"  # sixteen seconds: outlasts CHAT_SHUTDOWN_TIMEOUT


def joined(frames):
    return "".join(f["text"] for f in frames if f["type"] in ("delta", "catchup"))


def sent(upstream, tag):
    [entry] = [e for e in upstream.stats()["log"] if e["tag"] == tag]
    return entry


def deltas(chat, count):
    frames = chat.until("start")
    while sum(f["type"] == "delta" for f in frames) < count:
        frames.append(chat.receive())
        assert frames[-1] is not None and frames[-1]["type"] == "delta", frames
    return frames


@pytest.mark.services
def test_it_resumes_on_another_process_a_reply_produced_on_the_first(two_processes, upstream):
    one, two = two_processes.servers
    session = new_session(one)
    first = Chat(one, session)
    first.send(type="send", content="cross process", model=SLOW)
    before = deltas(first, 3)
    start = before[0]
    seq = before[-1]["seq"]
    first.close()
    second = Chat(two, session)
    second.send(type="resume", conversation=start["conversation"], have={str(start["message"]): seq})
    frames = second.until("done", timeout=30)
    catchup = next(f for f in frames if f["type"] == "catchup")
    assert catchup["after"] == seq and catchup["message"] == start["message"]
    live = [f["seq"] for f in frames if f["type"] == "delta"]
    assert live == list(range(catchup["seq"] + 1, catchup["seq"] + 1 + len(live)))
    assert frames[-1]["status"] == "completed"
    assert upstream.wait_idle(10)
    screen = joined(before) + joined(frames)
    assert screen == sent(upstream, "cross process")["text"]
    assert two_processes.store.message(start["message"]) == ("completed", screen)
    assert two_processes.store.wait_record(start["message"]) == [("completed", 60)]
    second.close()


@pytest.mark.services
def test_it_lets_a_socket_on_another_process_watch_and_stop_the_reply(two_processes, upstream):
    one, two = two_processes.servers
    session = new_session(one)
    producer = Chat(one, session)
    producer.send(type="send", content="stop from afar", model=SLOW)
    start = deltas(producer, 1)[0]
    watcher = Chat(two, session)
    watcher.send(type="resume", conversation=start["conversation"], have={})
    frames = watcher.until("catchup", timeout=20)
    frames.append(watcher.receive())
    assert frames[-1]["type"] in ("resumed", "delta"), frames
    watcher.send(type="stop")
    for chat in (watcher, producer):
        assert chat.until("done", timeout=20)[-1]["status"] == "stopped"
    assert two_processes.store.wait_record(start["message"])[0][0] == "stopped"
    # Someone else cannot stop or watch it: another session's resume finds nothing.
    stranger = Chat(two, new_session(two))
    stranger.send(type="resume", conversation=start["conversation"], have={str(start["message"]): 0})
    assert stranger.until("resumed")[-1]["messages"] == []
    for chat in (producer, watcher, stranger):
        chat.close()


@pytest.mark.services
def test_it_tells_a_page_on_another_process_of_a_reply_started_in_its_conversation(two_processes, upstream):
    one, two = two_processes.servers
    session = new_session(one)
    sender = Chat(one, session)
    sender.send(type="send", content="open a conversation", model=FAST)
    conversation = sender.until("done")[0]["conversation"]
    follower = Chat(two, session)
    follower.send(type="follow", conversation=conversation)
    assert follower.quiet(0.5) == []  # let process two's hub join the conversation's group
    sender.send(type="send", content="told across processes", model=SLOW, conversation=conversation)
    start = deltas(sender, 1)[0]
    told = follower.receive(timeout=10)
    assert told == {"type": "reply", "conversation": conversation, "message": start["message"], "model": SLOW,
                    "content": "told across processes"}
    follower.send(type="resume", conversation=conversation, have={str(start["message"]): 0})
    frames = follower.until("catchup", timeout=20)
    frames.append(follower.receive())
    assert frames[-1]["type"] in ("resumed", "delta"), frames
    follower.send(type="stop", message=start["message"])
    for chat in (follower, sender):
        assert chat.until("done", timeout=20)[-1]["status"] == "stopped"
    assert two_processes.store.wait_record(start["message"])[0][0] == "stopped"
    for chat in (sender, follower):
        chat.close()


def test_it_finishes_or_stores_every_reply_in_flight_on_sigterm(one_process, upstream, tmp_path):
    """SIGTERM mid-reply: a short reply finishes, a long one is stored with what it has; both records written."""
    env = server_env(one_process.store.database_url, "", MODELS + [LONG], upstream.base_url + "/v1", **SETTINGS)
    server = Server(env, tmp_path / "daphne.log").start()
    session = new_session(server)
    short, long = Chat(server, session), Chat(server, session)
    short.send(type="send", content="finish me", model=SLOW)
    long.send(type="send", content="cut me", model=LONG)
    short_frames, long_frames = deltas(short, 2), deltas(long, 2)
    exit_code = []
    stopper = threading.Thread(target=lambda: exit_code.append(server.terminate(timeout=40)))
    stopper.start()
    short_frames += short.until("done", timeout=30)
    long_frames += long.until("done", timeout=30)
    stopper.join(45)
    assert exit_code == [0], server.log()
    assert short_frames[-1]["status"] == "completed"
    assert long_frames[-1]["status"] == "failed"
    store = one_process.store
    short_id, long_id = short_frames[0]["message"], long_frames[0]["message"]
    assert store.message(short_id) == ("completed", joined(short_frames))
    assert store.records(short_id) == [("completed", 60)]
    status, content = store.message(long_id)
    assert status == "failed" and content.startswith(joined(long_frames)) and content
    [(record_status, tokens)] = store.records(long_id)
    assert record_status == "failed" and 2 <= tokens < 400
    assert upstream.wait_idle(10)
    assert sent(upstream, "cut me")["status"] == "closed_early"
