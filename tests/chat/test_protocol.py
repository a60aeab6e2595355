"""The server frames chat/protocol.py builds by hand rather than through json.dumps of a dict."""

import json

import pytest

from chat import protocol


@pytest.mark.parametrize("text", ['plain', 'a "quote", a \\ and }{ ]', "line\nbreak\ttab", "é 😀 \u2028", ""])
def test_it_builds_a_delta_that_is_the_documented_json(text):
    frame = protocol.delta(protocol.delta_head(34), 5, text)
    assert json.loads(frame) == {"type": "delta", "message": 34, "seq": 5, "text": text}


def test_it_builds_catchups_a_watcher_can_spot_by_their_head():
    # A socket watching a reply on another process stops waiting for an answer when a frame
    # starting with CATCHUP_HEAD arrives (chat/consumers.py, listen).
    frame = protocol.catchup(12, 34, "demo/assistant", 17, 25, '{"type": "catchup"')
    assert frame.startswith(protocol.CATCHUP_HEAD)
    assert not protocol.delta(protocol.delta_head(34), 1, "x").startswith(protocol.CATCHUP_HEAD)
    assert not protocol.start(12, 34, "demo/assistant", '{"type": "catchup"').startswith(protocol.CATCHUP_HEAD)
