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


def test_the_shared_client_closes_with_its_event_loop():
    """A loop that ends (asyncio.run, an asyncio.Runner) closes its client: no aiohttp session or
    connection outlives it ("Unclosed client session", "Unclosed connector")."""
    from chat.providers import http

    mock = MockUpstream(ttft_ms=1, gap_ms=1, tokens=3)
    base = mock.start_in_thread()
    port = int(base.rsplit(":", 1)[1])

    async def use():
        assert await reply(base)
        assert upstream_sockets(port) == {"ESTABLISHED": 1}  # pooled, kept alive
        return http.client()

    try:
        shared = asyncio.run(use())
        assert shared.is_closed
        assert shared._transport.client.closed  # aiohttp's session, and with it its connector
        assert upstream_sockets(port) == {}
    finally:
        mock.stop()


async def test_close_client_closes_it_once_and_a_new_one_follows(mock):
    from chat.providers import http

    first = http.client()
    await close_client()
    assert first.is_closed and first._transport.client.closed
    second = http.client()
    assert second is not first and not second.is_closed
    await close_client()
    assert second.is_closed


async def test_a_stream_in_flight_keeps_no_copy_of_its_prompt(mock):
    """Once the upstream has the request, neither the Call, the payload nor httpx's request keeps the
    prompt (history and message) for the length of the stream: only its size, for an estimate."""
    import tracemalloc

    provider = OpenAIProvider({"api": "openai", "base_url": mock.base_url + "/v1", "api_key": "k"})
    call = Call(model="mock/m+ttft=1+gap=100+tokens=3",
                messages=[{"role": "user", "content": "a long history " * 70_000}])  # ~1 MiB
    prompt_estimate = call.prompt_estimate()
    tracemalloc.start(30)
    try:
        stream = provider.stream(call)
        first = await anext(stream)
        # What this process's client holds (the mock upstream, in a thread here, keeps its own copy).
        ours = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, "*/chat/mock_upstream/*", all_frames=True)])
        held = [s for s in ours.statistics("lineno") if s.size >= 512 * 1024]
        rest = [text async for text in stream]
    finally:
        tracemalloc.stop()
        await close_client()
    assert first and rest and call.finish_reason
    assert held == [], [str(s) for s in held]
    assert call.messages == [] and call.prompt_estimate() == prompt_estimate


async def test_a_stream_in_flight_keeps_no_headers_and_its_connection_is_reused(mock):
    """Once the answer is a success, httpx's request and response and aiohttp's response keep no
    headers (the API key among them) for the length of the stream; the body still reads to its end,
    and the connection goes back to the pool for the next request."""
    import aiohttp

    from django.conf import settings

    from chat.providers.http import ResponseHandler, body, client, post

    provider = OpenAIProvider({"api": "openai", "base_url": mock.base_url + "/v1", "api_key": "sk-secret"})
    try:
        for attempt in range(2):
            call = Call(model="mock/m+ttft=1+gap=5+tokens=3", messages=[{"role": "user", "content": "hi"}])
            async with post(call, provider.url, provider.payload(call), provider.headers) as response:
                chunks = body(response)
                first = await anext(chunks)
                raw = response.extensions["body"].response
                assert isinstance(raw, aiohttp.ClientResponse)
                assert list(response.headers.raw) == [] and list(response.request.headers.raw) == []
                assert len(raw.headers) == 0 and raw.raw_headers == () and len(raw.request_info.headers) == 0
                assert str(raw.request_info.url) == provider.url and raw.request_info.method == "POST"
                # No read timer re-armed on every read (the relay's Ticker enforces stalls); the
                # connect timeout stays.
                protocol = raw.connection.protocol
                assert protocol.read_timeout is None and protocol._read_timeout_handle is None
                # its queue of parsed response heads holds no deque between responses
                assert type(protocol) is ResponseHandler and protocol._buffer == () and len(protocol) == 0
                assert client().timeout.connect == settings.CHAT_CONNECT_TIMEOUT and client().timeout.read is None
                rest = b"".join([chunk async for chunk in chunks])
            assert b"data: [DONE]" in first + rest
            assert upstream_sockets(int(mock.base_url.rsplit(":", 1)[1])) == {"ESTABLISHED": 1}  # pooled, reused
    finally:
        await close_client()


async def test_a_finished_response_is_freed_at_once_not_left_to_the_collector(mock):
    """httpx's body wrapper refers back to its response: without the cycle broken on close, a reply's
    response, body, aiohttp response and reader wait for the garbage collector (whose pauses stall the
    whole loop). Read to its end, and closed early (a stop), both are freed by reference counting."""
    import gc
    import weakref

    from chat.providers.http import body, post

    provider = OpenAIProvider({"api": "openai", "base_url": mock.base_url + "/v1", "api_key": "k"})
    gc.collect()
    gc.disable()
    try:
        for read_to_end in (True, False):
            call = Call(model="mock/m+ttft=1+gap=5+tokens=3", messages=[{"role": "user", "content": "hi"}])
            async with post(call, provider.url, provider.payload(call), provider.headers) as response:
                chunks = body(response)
                first = await anext(chunks)
                held = [weakref.ref(o) for o in (response, response.extensions["body"],
                                                 response.extensions["body"].response)]
                if read_to_end:
                    assert b"data: [DONE]" in first + b"".join([chunk async for chunk in chunks])
            del response, chunks
            assert [ref() for ref in held] == [None, None, None], read_to_end
    finally:
        gc.enable()
        await close_client()
