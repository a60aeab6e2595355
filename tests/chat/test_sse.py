"""The SSE decoder against the WHATWG event-stream rules, fed bytes directly."""

import asyncio
import logging

import pytest

from chat.providers import UpstreamError
from chat.sse import END, EventTooLarge, SSEDecoder, texts


def events_of(*chunks):
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def test_it_reads_lf_line_ends():
    events = events_of(b"data: one\n\ndata: two\n\n")
    assert [e.data for e in events] == ["one", "two"]


def test_it_reads_crlf_line_ends():
    events = events_of(b"data: one\r\n\r\ndata: two\r\n\r\n")
    assert [e.data for e in events] == ["one", "two"]


def test_it_reads_cr_line_ends():
    events = events_of(b"data: one\r\rdata: two\r\r")
    assert [e.data for e in events] == ["one", "two"]


def test_it_counts_a_crlf_split_across_reads_once():
    events = events_of(b"data: one\r", b"\n\r", b"\ndata: two\r\n", b"\r\n")
    assert [e.data for e in events] == ["one", "two"]


def test_it_skips_comment_lines():
    events = events_of(b": keep-alive\n\n: another\ndata: x\n\n")
    assert [e.data for e in events] == ["x"]


def test_it_joins_multi_line_data_with_lf():
    events = events_of(b"data: first\ndata: second\ndata:\ndata: third\n\n")
    assert events[0].data == "first\nsecond\n\nthird"


def test_it_takes_data_with_or_without_the_space():
    events = events_of(b"data:no-space\n\ndata: one-space\n\ndata:  two-spaces\n\n")
    assert [e.data for e in events] == ["no-space", "one-space", " two-spaces"]


def test_it_reads_event_id_and_retry_fields():
    events = events_of(b"event: content_block_delta\nid: 7\nretry: 1500\ndata: {}\n\n")
    event = events[0]
    assert (event.event, event.id, event.retry, event.data) == ("content_block_delta", "7", 1500, "{}")


def test_it_resets_the_event_type_but_keeps_the_last_id():
    events = events_of(b"event: ping\nid: 3\ndata: a\n\ndata: b\n\n")
    assert [(e.event, e.id) for e in events] == [("ping", "3"), ("message", "3")]


def test_it_ignores_a_bad_retry_and_an_id_with_nul():
    events = events_of(b"retry: soon\nid: a\x00b\ndata: x\n\n")
    assert (events[0].retry, events[0].id) == (None, None)


def test_it_dispatches_nothing_for_an_event_without_data():
    assert events_of(b"event: ping\n\n") == []


def test_it_decodes_a_utf8_character_split_across_reads():
    payload = "data: héllo €🙂\n\n".encode()
    split = payload.index("€".encode()) + 1  # inside the euro sign's three bytes
    events = events_of(payload[:split], payload[split:-4], payload[-4:])
    assert events[0].data == "héllo €🙂"


def test_it_feeds_one_byte_at_a_time():
    payload = 'event: x\r\ndata: {"a": "ü"}\r\n\r\n'.encode()
    events = events_of(*[payload[i : i + 1] for i in range(len(payload))])
    assert [(e.event, e.data) for e in events] == [("x", '{"a": "ü"}')]


def test_it_treats_a_field_without_colon_as_a_name_with_empty_value():
    events = events_of(b"data\ndata\n\n")
    assert events[0].data == "\n"


def test_it_keeps_an_unterminated_event_at_close():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close().data == "[DONE]"
    assert decoder.close() is None


def test_it_reads_openai_chunks_with_null_usage_until_the_last():
    stream = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
        b'data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    events = events_of(stream[:37], stream[37:90], stream[90:])
    assert len(events) == 4 and events[-1].data == "[DONE]"


async def chunks_of(*chunks):
    for chunk in chunks:
        yield chunk


async def test_it_yields_the_text_of_each_read_and_stops_at_the_end_marker():
    def read(event):
        return END if event.data == "[DONE]" else event.data

    stream = chunks_of(b"data: a\n\ndata: b\n\n", b"data: c\n", b"\ndata: [DONE]\n\ndata: after\n\n")
    assert [text async for text in texts(stream, read)] == ["ab", "c"]


async def test_it_yields_the_text_before_a_bad_event_then_raises():
    def read(event):
        if event.data == "bad":
            raise ValueError("bad event")
        return event.data

    received = []
    with pytest.raises(ValueError, match="bad event"):
        async for text in texts(chunks_of(b"data: a\n\ndata: b\n\ndata: bad\n\ndata: c\n\n"), read):
            received.append(text)
    assert received == ["ab"]


async def test_it_reads_an_unterminated_last_event():
    texts_read = [t async for t in texts(chunks_of(b"data: a\n\ndata: tail"), lambda event: event.data)]
    assert texts_read == ["a", "tail"]


async def test_it_stops_draining_a_body_kept_open_after_the_end_marker(caplog):
    caplog.set_level(logging.DEBUG, logger="chat.sse")

    async def kept_open():
        yield b"data: a\n\ndata: [DONE]\n\n"
        await asyncio.sleep(3600)
        yield b"never"

    def read(event):
        return END if event.data == "[DONE]" else event.data

    texts_read = await asyncio.wait_for(_collect(texts(kept_open(), read)), 5)
    assert texts_read == ["a"]
    assert caplog.messages == ["the upstream kept the body open after the end marker; its connection is closed"]


async def _collect(stream):
    return [text async for text in stream]


# Edges a planted bug changed without any test failing (issue 17).


def test_it_reads_crlf_inside_multi_line_data():
    events = events_of(b"data: one\r\ndata: two\r\ndata: three\r\n\r\n")
    assert [e.data for e in events] == ["one\ntwo\nthree"]


def test_it_ends_a_line_at_a_cr_split_from_the_text_after_it():
    events = events_of(b"data: one\r", b"data: two\r", b"\rdata: three\n\n")
    assert [e.data for e in events] == ["one\ntwo", "three"]


def test_it_forgets_the_event_type_at_a_blank_line_without_data():
    events = events_of(b"event: ping\n\ndata: x\n\n")
    assert [(e.event, e.data) for e in events] == [("message", "x")]


def test_it_names_an_event_without_a_type_message():
    events = events_of(b"data: x\n\n")
    assert events[0].event == "message"


def test_it_joins_the_lines_of_an_unterminated_last_event():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: delta\ndata: one\ndata: two") == []
    tail = decoder.close()
    assert (tail.event, tail.data) == ("delta", "one\ntwo")


def test_it_replaces_invalid_utf8_and_keeps_the_rest():
    events = events_of(b"data: a\xffb\n\n")
    assert events[0].data == "a\ufffdb"


def test_it_replaces_a_truncated_utf8_character_at_close():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: \xe2\x82") == []
    assert decoder.close().data == "\ufffd"


def test_it_drops_a_byte_order_mark_that_opens_the_stream():
    events = events_of(b"\xef\xbb\xbfdata: one\n\ndata: two\n\n")
    assert [e.data for e in events] == ["one", "two"]


def test_it_drops_a_byte_order_mark_split_across_reads():
    events = events_of(b"\xef", b"\xbb", b"\xbfdata: one\n\n")
    assert [e.data for e in events] == ["one"]


def test_it_keeps_a_byte_order_mark_inside_the_stream():
    events = events_of(b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n")
    assert [e.data for e in events] == ["a"]  # not at the start: U+FEFF is part of the field name


def test_it_reads_one_long_line_fed_in_small_reads():
    payload = b"data: " + b"x" * 300_000 + b"\n\n"
    events = events_of(*[payload[i : i + 4096] for i in range(0, len(payload), 4096)])
    assert [len(e.data) for e in events] == [300_000]


def test_it_keeps_the_pieces_of_an_unfinished_line_without_rejoining_them():
    # Re-joining the whole line on every read is what made one long event quadratic.
    decoder = SSEDecoder()
    decoder.feed(b"data: ")
    for _ in range(1000):
        assert decoder.feed(b"x" * 4096) == []
    assert len(decoder._tail) == 1001 and max(len(piece) for piece in decoder._tail) == 4096
    events = decoder.feed(b"\n\n")
    assert len(events[0].data) == 4096 * 1000 and decoder._tail == []


def test_it_ends_the_stream_when_one_line_outgrows_the_cap():
    decoder = SSEDecoder(limit=10_000)
    decoder.feed(b"data: " + b"x" * 9_000)
    with pytest.raises(EventTooLarge, match="larger than 10000 bytes .CHAT_MAX_EVENT_BYTES."):
        decoder.feed(b"x" * 2_000)


def test_it_ends_the_stream_when_many_data_lines_outgrow_the_cap():
    decoder = SSEDecoder(limit=10_000)
    with pytest.raises(EventTooLarge):
        for _ in range(20):
            decoder.feed(b"data: " + b"x" * 999 + b"\n")


def test_it_counts_the_cap_in_utf8_bytes():
    decoder = SSEDecoder(limit=1_000)
    with pytest.raises(EventTooLarge):
        decoder.feed("data: ".encode() + "€".encode() * 400)  # 400 characters, 1,200 bytes


def test_it_accepts_events_up_to_the_cap_one_after_another():
    decoder = SSEDecoder(limit=1_000)
    events = []
    for _ in range(50):
        events += decoder.feed(b"data: " + b"x" * 900 + b"\n\n")
    assert len(events) == 50


def test_it_hands_out_the_events_before_the_one_over_the_cap_then_raises():
    decoder = SSEDecoder(limit=1_000)
    events = decoder.feed(b"data: a\n\ndata: " + b"x" * 2_000)
    assert [e.data for e in events] == ["a"]
    with pytest.raises(EventTooLarge):
        decoder.feed(b"\n\n")


async def test_it_fails_the_reply_with_a_clear_error_past_the_cap(settings):
    settings.CHAT_MAX_EVENT_BYTES = 64 * 1024
    body = [b"data: a\n\n", b"data: "] + [b"x" * 4096] * 40

    received = []
    with pytest.raises(UpstreamError, match="CHAT_MAX_EVENT_BYTES"):
        async for text in texts(chunks_of(*body), lambda event: event.data):
            received.append(text)
    assert received == ["a"]


def test_it_closes_on_an_unterminated_event_read_in_pieces_with_its_id_retry_and_default_type():
    decoder = SSEDecoder(limit=100)
    for piece in (b"id: 7\nretry: 250\nda", b"ta: ab", b"c"):
        assert decoder.feed(piece) == []
    tail = decoder.close()
    assert (tail.data, tail.event, tail.id, tail.retry) == ("abc", "message", "7", 250)
    assert decoder.close() is None  # closed: nothing is left, and nothing counts against the cap


def test_it_drops_only_the_lf_that_pairs_a_cr_ending_the_last_read():
    events = events_of(b"data: one\r", b"\ndata: two\r\n\r\n")
    assert [e.data for e in events] == ["one\ntwo"]


def test_it_ignores_a_one_character_line_and_a_comment_that_looks_like_a_field():
    events = events_of(b"x\n:data: not data\ndata: a\n\n")
    assert [e.data for e in events] == ["a"]


def test_it_counts_each_data_line_with_its_line_end_against_the_cap():
    decoder = SSEDecoder(limit=10)
    assert decoder.feed(b"data: abcd\ndata: abcd\n") == []  # 4 + 1 and 4 + 1 bytes: at the cap, not over
    assert [e.data for e in decoder.feed(b"\n")] == ["abcd\nabcd"]
    assert decoder.feed(b"data: efgh\ndata: efgh\n") == []  # the next event starts again from 0
    assert [e.data for e in decoder.feed(b"\n")] == ["efgh\nefgh"]
    with pytest.raises(EventTooLarge):
        SSEDecoder(limit=10).feed(b"data: abcd\ndata: abcde\n")  # 5 + 6 bytes
    split = SSEDecoder(limit=10)  # a line read in two pieces counts once, when it ends
    assert split.feed(b"data: ab") == [] and split.feed(b"cd\ndata: abcd\n") == []
    assert [e.data for e in split.feed(b"\n")] == ["abcd\nabcd"]


async def test_it_yields_nothing_for_an_unterminated_last_event_read_as_the_end_or_as_no_text():
    def read(event):
        return {"[DONE]": END, "ping": ""}.get(event.data, event.data)

    assert [t async for t in texts(chunks_of(b"data: a\n\ndata: [DONE]"), read)] == ["a"]
    assert [t async for t in texts(chunks_of(b"data: a\n\ndata: ping"), read)] == ["a"]


async def test_waiting_for_the_next_chunk_it_keeps_nothing_of_the_last():
    """A stream waits for its next chunk most of its life: the last chunk's bytes, event and text are
    not held by the generator meanwhile (bench/memory.py counts what a stream holds)."""
    more = asyncio.Event()

    async def chunks():
        yield b'data: {"text": "' + b"x" * 300 + b'"}\n\ndata: second\n\n'
        await more.wait()
        yield b"data: third\n\n"

    stream = texts(chunks(), lambda event: "x" if event.data.startswith("{") else event.data)
    assert await anext(stream) == "xsecond"
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # the generator is now awaiting the next chunk
    held = stream.ag_frame.f_locals
    assert held["chunk"] is held["event"] is held["text"] is held["parts"] is None
    more.set()
    assert await waiting == "third"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
