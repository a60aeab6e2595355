"""The database sees O(1) writes per request, never one per token."""

import pytest

from bench.sql_counts import SqlCounts
from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)


# Installed once: a connection Channels' worker thread keeps open is wrapped when it opens.
COUNTS = SqlCounts().install()


async def writes_for_reply(session_key, settings, max_tokens):
    settings.CHAT_MAX_TOKENS = max_tokens
    ws = await connect(session_key)
    before = COUNTS.writes
    await ws.send_json_to({"type": "send", "content": "tell me about streaming"})
    frames = await receive_until_done(ws)
    writes = COUNTS.writes - before
    await ws.disconnect()
    assert frames[-1]["usage"]["completion_tokens"] == max_tokens
    return writes


async def test_it_writes_the_same_few_rows_for_a_short_and_a_long_reply(alice_session, settings):
    short = await writes_for_reply(alice_session, settings, 2)
    long = await writes_for_reply(alice_session, settings, 60)
    assert short == long
    assert 0 < long <= 8
