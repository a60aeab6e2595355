"""The database sees O(1) writes per request, never one per token."""

import contextlib

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from tests.conftest import connect, receive_until_done

pytestmark = pytest.mark.django_db(transaction=True)

WRITES = ("INSERT", "UPDATE", "DELETE")


_target = []


def _count(execute, sql, params, many, context):
    if _target and sql.lstrip().upper().startswith(WRITES):
        _target[-1].append(sql.split()[:3])
    return execute(sql, params, many, context)


def _install(sender=None, connection=None, **kwargs):
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_install)


@contextlib.contextmanager
def count_writes():
    """Count write statements on every database connection, including those in Channels' worker threads."""
    for conn in connections.all():
        _install(connection=conn)
    statements = []
    _target.append(statements)
    try:
        yield statements
    finally:
        _target.remove(statements)


async def writes_for_reply(session_key, settings, max_tokens):
    settings.CHAT_MAX_TOKENS = max_tokens
    ws = await connect(session_key)
    with count_writes() as statements:
        await ws.send_json_to({"type": "send", "content": "tell me about streaming"})
        frames = await receive_until_done(ws)
    await ws.disconnect()
    assert frames[-1]["usage"]["completion_tokens"] == max_tokens
    return statements


async def test_it_writes_the_same_few_rows_for_a_short_and_a_long_reply(alice_session, settings):
    short = await writes_for_reply(alice_session, settings, 2)
    long = await writes_for_reply(alice_session, settings, 60)
    assert len(short) == len(long)
    assert 0 < len(long) <= 8
