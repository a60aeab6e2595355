"""What the upstream reports at the edges, read over the real HTTP path from the mock upstream.

Each expectation comes from what the mock sent (its log) or is written here, never recomputed from
the record under test.
"""

import pytest

from billing.models import UsageRecord
from chat.models import Message
from chat.providers import Call
from chat.providers.anthropic import read_event
from chat.sse import Event
from tests.chat.test_upstream import ANTHROPIC, OPENAI, chat, only_log
from tests.mock_fixtures import allow

pytestmark = pytest.mark.django_db(transaction=True)

BOTH = [OPENAI, ANTHROPIC]


def frames_of(frames, kind):
    return [f for f in frames if f["type"] == kind]


@pytest.mark.parametrize("model", BOTH)
async def test_it_fails_a_stream_that_ends_cleanly_without_a_finish_marker(alice_session, settings, use_mock, model):
    model += "+fault=no_finish+tokens=7"
    allow(settings, model)
    frames = await chat(alice_session, model)
    sent = only_log(use_mock)
    (error,) = frames_of(frames, "error")
    assert frames[-1]["status"] == "failed"
    record = await UsageRecord.objects.aget()
    assert error["code"] == "upstream_error"
    ended = "The upstream ended the stream before the reply was finished."
    assert error["message"] == f"{ended} Reference: {record.request_id}."
    assert record.status == "failed" and record.finish_reason == ""
    # The usage it did report is exact.
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (sent["prompt_tokens"], 7, False)
    reply = await Message.objects.aget(pk=frames[-1]["message"])
    assert reply.status == "failed" and len(reply.content.split()) == 7


async def test_it_maps_an_anthropic_rate_limit_error_mid_stream(alice_session, settings, use_mock):
    model = ANTHROPIC + "+fault=rate_limit_mid+after=4"
    allow(settings, model)
    frames = await chat(alice_session, model)
    (error,) = frames_of(frames, "error")
    assert error["code"] == "rate_limited"
    assert len("".join(f["text"] for f in frames_of(frames, "delta")).split()) == 4
    record = await UsageRecord.objects.aget()
    # The person gets our plain sentence and a reference; the upstream's words are on the record.
    assert error["message"] == f"The upstream failed mid-stream. Reference: {record.request_id}."
    assert record.status == "failed" and "per-minute rate limit" in record.error


async def test_it_reports_an_openai_error_chunk_mid_stream_as_an_upstream_error(alice_session, settings, use_mock):
    model = OPENAI + "+fault=rate_limit_mid+after=4"
    allow(settings, model)
    frames = await chat(alice_session, model)
    (error,) = frames_of(frames, "error")
    record = await UsageRecord.objects.aget()
    assert error["code"] == "upstream_error" and error["ref"] == str(record.request_id)
    assert record.status == "failed" and "Rate limit reached for requests." in record.error


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", BOTH)
async def test_it_estimates_usage_reported_with_null_counts(alice_session, settings, use_mock, model, stream):
    model += "+fault=null_usage+tokens=9"
    allow(settings, model)
    frames = await chat(alice_session, model, content="x" * 400, stream=stream)
    assert frames[-1]["status"] == "completed"
    record = await UsageRecord.objects.aget()
    assert record.estimated is True
    # The estimate: ~4 characters a token of what was sent (400 + the system prompt), and the pieces read.
    assert 100 <= record.prompt_tokens <= 120
    assert record.completion_tokens == (9 if stream else 1)


@pytest.mark.parametrize("model,reason", [(OPENAI, "length"), (ANTHROPIC, "max_tokens")])
async def test_it_records_the_finish_reason_of_a_non_streamed_reply(alice_session, settings, use_mock, model, reason):
    settings.CHAT_MAX_TOKENS = 5
    allow(settings, model + "+tokens=20")
    await chat(alice_session, model + "+tokens=20", stream=False)
    record = await UsageRecord.objects.aget()
    assert (record.finish_reason, record.completion_tokens, record.streamed) == (reason, 5, False)


@pytest.mark.parametrize(("model", "what"), [(OPENAI, "completion"), (ANTHROPIC, "message")])
async def test_it_fails_a_non_streamed_reply_it_cannot_read_and_names_its_http_status(
        alice_session, settings, use_mock, model, what):
    allow(settings, model + "+fault=malformed")
    frames = await chat(alice_session, model + "+fault=malformed", stream=False)
    (error,) = frames_of(frames, "error")
    record = await UsageRecord.objects.aget()
    assert error["message"] == f"The upstream sent an unreadable {what} (HTTP 200). Reference: {record.request_id}."
    assert (frames[-1]["status"], record.status) == ("failed", "failed")


async def test_it_reads_cache_reads_of_a_non_streamed_anthropic_reply(alice_session, settings, use_mock):
    model = ANTHROPIC + "+cached=30+tokens=6"
    allow(settings, model)
    await chat(alice_session, model, content="y" * 400, stream=False)
    sent = only_log(use_mock)
    record = await UsageRecord.objects.aget()
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (sent["prompt_tokens"], 30, 6)
    assert record.estimated is False


def test_it_takes_a_running_input_total_from_message_delta():
    call = Call(model="anthropic/claude", messages=[])
    read_event(call, Event('{"type":"message_start","message":{"model":"claude-x","usage":'
                           '{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}', "message_start"))
    read_event(call, Event('{"type":"message_delta","delta":{},"usage":{"input_tokens":12,'
                           '"cache_read_input_tokens":6,"cache_creation_input_tokens":2,"output_tokens":3}}',
                           "message_delta"))
    read_event(call, Event('{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":8}}',
                           "message_delta"))
    usage = call.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.completion_tokens) == (20, 6, 2, 8)
    assert call.usage_partial is False and call.finish_reason == "end_turn"


def test_it_reads_a_message_delta_that_came_without_message_start():
    call = Call(model="anthropic/claude", messages=[])
    read_event(call, Event('{"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
                           '"usage":{"input_tokens":7,"output_tokens":4}}', "message_delta"))
    assert (call.usage.prompt_tokens, call.usage.completion_tokens) == (7, 4)
    assert call.usage_partial is False and call.finish_reason == "max_tokens"
