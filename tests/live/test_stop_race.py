"""`stop` at every point of a short reply, on the real server: exactly one `done` and one record each time."""

from tests.live.client import Chat, new_session
from tests.live.conftest import SHORT

TOKENS = 4
RACE_TRIES = 6  # stop sent the instant the last delta arrives: the race issue 18 saw lose `done`


def stop_after(chat, deltas):
    """Send a reply and `stop` after `deltas` deltas (-1: before `start`); return (frames, message id)."""
    chat.send(type="send", content=f"stop after {deltas}", model=SHORT)
    frames = []
    if deltas < 0:
        chat.send(type="stop")
    else:
        frames += chat.until("start")
        seen = 0
        while seen < deltas:
            frame = chat.receive()
            assert frame is not None, f"waited for delta {seen + 1} in vain: {frames}"
            frames.append(frame)
            assert frame["type"] == "delta", frames
            seen += 1
        chat.send(type="stop")
    frames += chat.until("done")
    frames += chat.quiet(0.2)
    start = next(f for f in frames if f["type"] == "start")
    return frames, start["message"]


def check_one_done_one_record(deployment, frames, message):
    kinds = [f["type"] for f in frames]
    assert kinds.count("start") == 1 and kinds.count("done") == 1, kinds
    assert kinds[-1] == "done" and "error" not in kinds, frames
    done = frames[-1]
    records = deployment.store.wait_record(message)
    assert len(records) == 1, records
    status, _ = records[0]
    assert status == done["status"], (records, done)
    text = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert deployment.store.message(message) == (done["status"], text)
    return done["status"]


def test_it_sends_one_done_and_writes_one_record_wherever_stop_lands(deployment):
    session = new_session(deployment.servers[0])
    chats = [Chat(server, session) for server in deployment.servers]  # with two processes, take turns
    statuses = []
    for n, point in enumerate([-1, *range(1, TOKENS + 1), *[TOKENS] * RACE_TRIES]):
        frames, message = stop_after(chats[n % len(chats)], point)
        statuses.append((point, check_one_done_one_record(deployment, frames, message)))
    assert statuses[0] == (-1, "stopped")
    assert all(status == "stopped" for point, status in statuses if 0 < point < TOKENS), statuses
    # After `done`, a stop has nothing to stop: no frame, and the record stays as it was.
    for chat in chats:
        chat.send(type="send", content="stop after done", model=SHORT)
        frames = chat.until("done")
        chat.send(type="stop")
        assert chat.quiet(0.3) == []
        assert check_one_done_one_record(deployment, frames, frames[0]["message"]) == "completed"
        chat.close()
