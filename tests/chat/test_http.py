"""The shared upstream client (chat/providers/http.py): an idle connection does not outlive the upstream's end.

httpcore, which this client used before, read nothing from an idle pooled connection, so one the
upstream closed stayed in CLOSE-WAIT until the next request passed through its pool (issue 18).
aiohttp's connections keep reading while idle and close as soon as the upstream does.
"""

import asyncio
import os

from bench import procfs
from chat.mock_upstream import MockUpstream
from chat.providers import Call
from chat.providers.http import close_client
from chat.providers.openai import OpenAIProvider


def upstream_sockets(port):
    """Return {state: count} of this process's TCP connections to `port`."""
    return procfs.peers(os.getpid(), {"mock": port})["mock"]


async def reply(base):
    provider = OpenAIProvider({"api": "openai", "base_url": base + "/v1", "api_key": "k"})
    call = Call(model="mock/m", messages=[{"role": "user", "content": "hi"}])
    return "".join([text async for text in provider.stream(call)])


async def test_it_closes_an_idle_connection_the_upstream_hung_up():
    mock = MockUpstream(ttft_ms=1, gap_ms=1, tokens=3)
    base = mock.start_in_thread()
    port = int(base.rsplit(":", 1)[1])
    try:
        assert await reply(base) and await reply(base)
        assert upstream_sockets(port) == {"ESTABLISHED": 1}  # kept alive and reused
    finally:
        mock.stop()  # the upstream closes every connection, as a provider closes idle ones
    for _ in range(40):
        if not upstream_sockets(port):
            break
        await asyncio.sleep(0.05)
    assert upstream_sockets(port) == {}
    mock = MockUpstream(ttft_ms=1, gap_ms=1, tokens=3)
    base = mock.start_in_thread()
    try:
        assert await reply(base)  # and the client still works
    finally:
        await close_client()
        mock.stop()
