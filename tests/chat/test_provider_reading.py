"""What each provider reads from the upstream's bodies and events, and what it sends: one body at a time.

The bodies are written here as the upstream sends them, and every expectation is a figure in them.
The same readers run over the real HTTP path in test_upstream.py and test_provider_edges.py.
"""

from decimal import Decimal

import pytest

from chat.providers import Call, UpstreamError
from chat.providers import anthropic, openai
from chat.providers.anthropic import AnthropicProvider, read_event, read_message
from chat.providers.openai import OpenAIProvider, read_chunk, read_completion, reported_cost
from chat.sse import END, Event


def call(**fields):
    return Call(model="up/model-x", messages=[{"role": "user", "content": "hi"}], **fields)


def usage_of(c):
    u = c.usage
    return (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens)


# OpenAI-compatible


def test_it_posts_openai_requests_to_chat_completions_with_the_key_as_a_bearer_token():
    provider = OpenAIProvider({"base_url": "http://up.example/v1", "api_key": "sk-1"})
    assert provider.url == "http://up.example/v1/chat/completions"
    assert provider.headers == {"Accept-Encoding": "identity", "Authorization": "Bearer sk-1"}
    assert OpenAIProvider({"base_url": "http://up", "api_key": ""}).headers == {"Accept-Encoding": "identity"}


def test_it_sends_openai_the_system_prompt_first_and_asks_a_stream_for_its_usage():
    provider = OpenAIProvider({"base_url": "http://up", "api_key": ""})
    assert provider.payload(call(system="Be brief.", max_tokens=50)) == {
        "model": "model-x", "max_tokens": 50, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    }
    assert provider.payload(call(stream=False, max_tokens=7)) == {
        "model": "model-x", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}],
    }


def test_it_reads_an_openai_chunks_text_model_finish_reason_and_usage():
    c = call()
    assert read_chunk(c, '{"model":"gpt-x-2025","choices":[{"delta":{"content":"Hel"},"finish_reason":null}]}') == "Hel"
    assert read_chunk(c, '{"choices":[{"delta":{"content":""}}]}') == ""
    assert read_chunk(c, '{"choices":[{"delta":null}]}') == ""
    assert read_chunk(c, '{"choices":[{"delta":{},"finish_reason":"length"}]}') == ""
    assert read_chunk(c, '{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,'
                         '"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":2},"cost":0.00021}}') == ""
    assert (c.upstream_model, c.finish_reason, c.pieces) == ("gpt-x-2025", "length", 1)
    assert usage_of(c) == (11, 3, 4, 2) and c.usage.cost == Decimal("0.00021")


def test_it_ignores_an_openai_usage_with_a_null_completion_count():
    c = call()
    read_chunk(c, '{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":null}}')
    read_chunk(c, '{"usage":"none"}')
    assert c.usage is None and c.upstream_model == ""


def test_it_reads_null_counts_inside_a_reported_openai_usage_as_zero():
    c = call()
    read_chunk(c, '{"usage":{"prompt_tokens":null,"completion_tokens":2,"prompt_tokens_details":null}}')
    assert usage_of(c) == (0, 2, 0, 0) and c.usage.cost is None
    read_chunk(c, '{"usage":{"prompt_tokens":4,"completion_tokens":0}}')  # a reported 0 is 0 tokens
    assert usage_of(c) == (4, 0, 0, 0)


@pytest.mark.parametrize(("data", "message", "detail"), [
    ("{not json", "The upstream sent a malformed event.", "'{not json'"),
    ("[1, 2]", "The upstream sent an unexpected event.", "'[1, 2]'"),
    ('{"error":{"message":"overloaded"}}', "The upstream reported an error mid-stream.", "HTTP stream: overloaded"),
    # A long chunk is shown by its first 120 characters.
    ("{" + "x" * 200, "The upstream sent a malformed event.", repr("{" + "x" * 119)),
    ("[" + "1," * 100 + "1]", "The upstream sent an unexpected event.", repr("[" + "1," * 59 + "1")),
])
def test_it_fails_on_an_openai_chunk_it_cannot_use(data, message, detail):
    with pytest.raises(UpstreamError) as failure:
        read_chunk(call(), data)
    assert (str(failure.value), failure.value.detail) == (message, detail)


def test_it_reads_an_openai_completion():
    c = call(stream=False)
    body = (b'{"model":"gpt-x-2025","choices":[{"message":{"content":"Hello there"},"finish_reason":"length"}],'
            b'"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}')
    assert read_completion(c, body, 200) == "Hello there"
    assert (c.upstream_model, c.finish_reason, c.pieces) == ("gpt-x-2025", "length", 1)
    assert usage_of(c) == (9, 2, 3, 0)


def test_it_reads_a_bare_openai_completion_as_stopped_with_its_usage_to_estimate():
    c = call(stream=False)
    assert read_completion(c, b'{"choices":[{"message":{"content":null}}],"usage":{"completion_tokens":null}}', 200) == ""
    assert (c.upstream_model, c.finish_reason, c.pieces, c.usage) == ("", "stop", 0, None)


@pytest.mark.parametrize("body", [b"<html>", b'{"choices":[]}', b'{"choices":[{}]}', b'{"choices":null}', b"[]"])
def test_it_fails_on_an_openai_completion_it_cannot_read(body):
    with pytest.raises(UpstreamError) as failure:
        read_completion(call(stream=False), body, 202)
    assert str(failure.value) == "The upstream sent an unreadable completion (HTTP 202)."


@pytest.mark.parametrize(("value", "expected"), [
    (0.00021, Decimal("0.00021")), ("0.5", Decimal("0.5")), (0, Decimal("0")), (999_999_999, Decimal("999999999")),
    (None, None), (True, None), ("n/a", None), ("NaN", None), ("Infinity", None), (-0.01, None), (10**9, None),
])
def test_it_keeps_a_reported_cost_only_when_it_is_a_number_the_record_can_hold(value, expected):
    assert reported_cost(value) == expected


# Anthropic


def test_it_posts_anthropic_requests_to_messages_under_v1_with_its_version_and_key():
    provider = AnthropicProvider({"base_url": "http://up.example", "api_key": "key-1"})
    assert provider.url == "http://up.example/v1/messages"
    assert provider.headers == {"anthropic-version": "2023-06-01", "Accept-Encoding": "identity", "x-api-key": "key-1"}
    bare = AnthropicProvider({"base_url": "http://up.example/v1", "api_key": ""})
    assert bare.url == "http://up.example/v1/messages" and "x-api-key" not in bare.headers


def test_it_sends_anthropic_the_system_prompt_as_a_top_level_field():
    provider = AnthropicProvider({"base_url": "http://up", "api_key": ""})
    assert provider.payload(call(system="Be brief.", max_tokens=50)) == {
        "model": "model-x", "max_tokens": 50, "stream": True, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert provider.payload(call(stream=False, max_tokens=7)) == {
        "model": "model-x", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}],
    }


def test_it_reads_an_anthropic_streams_text_usage_cache_and_stop_reason():
    c = call()
    events = [
        ("message_start", '{"type":"message_start","message":{"model":"claude-x-20250101","usage":{"input_tokens":10,'
                          '"cache_read_input_tokens":20,"cache_creation_input_tokens":40,"output_tokens":1}}}'),
        ("ping", "{}"),
        ("content_block_delta", '{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}'),
        ("content_block_delta", '{"type":"content_block_delta","delta":{"type":"text_delta","text":""}}'),
        ("content_block_delta", '{"type":"content_block_delta","delta":{"type":"input_json_delta","text":"{}"}}'),
        ("content_block_delta", '{"type":"content_block_delta"}'),
    ]
    assert [read_event(c, Event(data, kind)) for kind, data in events] == ["", "", "Hi", "", "", ""]
    assert (c.upstream_model, c.pieces, c.usage_partial) == ("claude-x-20250101", 1, True)
    assert usage_of(c) == (70, 0, 20, 40)
    read_event(c, Event('{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":6}}',
                        "message_delta"))
    assert usage_of(c) == (70, 6, 20, 40) and c.usage_partial is False and c.finish_reason == "max_tokens"


def test_it_takes_an_anthropic_event_type_from_the_data_over_the_event_name():
    c = call()
    assert read_event(c, Event('{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}')) == "x"
    delta = '{"type":"content_block_delta","delta":{"type":"text_delta","text":"y"}}'
    assert read_event(c, Event(delta, "message_delta")) == "y" and c.usage is None


def test_it_takes_an_anthropic_event_type_from_the_event_name_when_the_data_has_none():
    c = call()
    assert read_event(c, Event('{"delta":{"type":"text_delta","text":"z"}}', "content_block_delta")) == "z"
    assert c.pieces == 1


def test_it_reads_a_message_start_without_usage_or_model():
    c = call()
    c.upstream_model = "earlier"
    read_event(c, Event('{"type":"message_start","message":null}', "message_start"))
    assert c.upstream_model == "" and usage_of(c) == (0, 0, 0, 0) and c.usage_partial is True


def test_it_keeps_the_usage_estimated_when_message_delta_counts_nothing():
    c = call()
    read_event(c, Event('{"type":"message_start","message":{"usage":{"input_tokens":5}}}', "message_start"))
    read_event(c, Event('{"type":"message_delta","delta":null,"usage":{"output_tokens":null}}', "message_delta"))
    assert usage_of(c) == (5, 0, 0, 0) and c.usage_partial is True and c.finish_reason == ""
    read_event(c, Event('{"type":"message_delta","usage":{"output_tokens":0}}', "message_delta"))
    assert c.usage_partial is False and usage_of(c) == (5, 0, 0, 0)  # a reported 0 is 0 tokens


def test_it_reads_null_anthropic_counts_as_zero():
    c = call()
    read_event(c, Event('{"type":"message_start","message":{"usage":{"input_tokens":null,'
                        '"cache_read_input_tokens":null,"cache_creation_input_tokens":null}}}', "message_start"))
    assert usage_of(c) == (0, 0, 0, 0)
    read_event(c, Event('{"type":"message_delta","usage":{"input_tokens":3,"cache_read_input_tokens":null,'
                        '"output_tokens":2}}', "message_delta"))
    assert usage_of(c) == (3, 2, 0, 0)


@pytest.mark.parametrize(("error", "code", "detail"), [
    ({"type": "rate_limit_error", "message": "Slow down"}, "rate_limited", "Slow down"),
    ({"type": "overloaded_error", "message": "Overloaded"}, "upstream_error", "Overloaded"),
    ({"type": "overloaded_error"}, "upstream_error", "overloaded_error"),
    ({}, "upstream_error", "error"),
])
def test_it_maps_an_anthropic_error_event_to_a_code_and_keeps_its_message(error, code, detail):
    import json

    with pytest.raises(UpstreamError) as failure:
        read_event(call(), Event(json.dumps({"type": "error", "error": error}), "error"))
    assert (str(failure.value), failure.value.code, failure.value.detail) == (
        "The upstream failed mid-stream.", code, detail)


@pytest.mark.parametrize(("data", "message", "detail"), [
    ("{not json", "The upstream sent a malformed event.", "'{not json'"),
    ('"text"', "The upstream sent an unexpected event.", """'"text"'"""),
    # A long event is shown by its first 120 characters.
    ("{" + "x" * 200, "The upstream sent a malformed event.", repr("{" + "x" * 119)),
    ('"' + "t" * 200 + '"', "The upstream sent an unexpected event.", repr('"' + "t" * 119)),
])
def test_it_fails_on_an_anthropic_event_it_cannot_use(data, message, detail):
    with pytest.raises(UpstreamError) as failure:
        read_event(call(), Event(data, "content_block_delta"))
    assert str(failure.value) == message and failure.value.detail == detail


@pytest.mark.parametrize("data", ["", "keep-alive", "{}"])
def test_it_skips_an_anthropic_ping_whatever_its_data_unread(data):
    c = call()
    assert read_event(c, Event(data, "ping")) == ""
    assert (c.usage, c.pieces, c.finish_reason) == (None, 0, "")


def test_it_reads_an_anthropic_message_with_its_text_blocks_usage_and_cache():
    c = call(stream=False)
    body = (b'{"model":"claude-x","stop_reason":"max_tokens","content":[{"type":"text","text":"Hel"},'
            b'{"type":"tool_use","text":"no"},{"type":"text","text":"lo"},{"type":"text"}],'
            b'"usage":{"input_tokens":10,"cache_read_input_tokens":20,"cache_creation_input_tokens":40,'
            b'"output_tokens":5}}')
    assert read_message(c, body, 200) == "Hello"
    assert (c.upstream_model, c.finish_reason, c.pieces) == ("claude-x", "max_tokens", 1)
    assert usage_of(c) == (70, 5, 20, 40)


def test_it_reads_a_bare_anthropic_message_as_ended_with_its_usage_to_estimate():
    c = call(stream=False)
    assert read_message(c, b'{"content":[],"usage":{"input_tokens":4,"output_tokens":null}}', 200) == ""
    assert (c.upstream_model, c.finish_reason, c.pieces, c.usage) == ("", "end_turn", 0, None)


@pytest.mark.parametrize("body", [b"<html>", b"{}", b'{"content":null}', b'{"content":["text"]}'])
def test_it_fails_on_an_anthropic_message_it_cannot_read(body):
    with pytest.raises(UpstreamError) as failure:
        read_message(call(stream=False), body, 529)
    assert str(failure.value) == "The upstream sent an unreadable message (HTTP 529)."


# Where a stream ends: [DONE] (OpenAI), message_stop (Anthropic)


@pytest.mark.parametrize(("provider", "end", "chunk", "finish"), [
    (openai, "[DONE]", '{"choices":[{"delta":{"content":"x"}}]}', "stop"),
    (anthropic, "message_stop", '{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}', "end_turn"),
])
def test_it_ends_a_stream_at_its_end_marker_with_the_default_finish_reason_when_none_was_given(
        provider, end, chunk, finish):
    c = call()
    marker = Event("[DONE]") if end == "[DONE]" else Event('{"type":"message_stop"}', "message_stop")
    assert provider.read_stream_event(c, Event(chunk, "content_block_delta")) == "x"
    assert c.finish_reason == ""
    assert provider.read_stream_event(c, marker) is END
    assert c.finish_reason == finish


@pytest.mark.parametrize(("provider", "reason", "marker"), [
    (openai, '{"choices":[{"delta":{},"finish_reason":"length"}]}', Event("[DONE]")),
    (anthropic, '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":3}}',
     Event('{"type":"message_stop"}', "message_stop")),
])
def test_it_keeps_the_finish_reason_the_stream_gave_at_its_end_marker(provider, reason, marker):
    c = call()
    assert provider.read_stream_event(c, Event(reason, "message_delta")) == ""
    assert provider.read_stream_event(c, marker) is END
    assert c.finish_reason == ("length" if provider is openai else "max_tokens")
