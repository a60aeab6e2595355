"""The Anthropic Messages API, streamed and not."""

import json
from functools import partial

from chat.providers import UpstreamError, Usage
from chat.providers.http import body, post
from chat.sse import END, texts

API_VERSION = "2023-06-01"


class AnthropicProvider:
    def __init__(self, config):
        base = config["base_url"]
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self.headers = {"anthropic-version": API_VERSION, "Accept-Encoding": "identity"}
        if config["api_key"]:
            self.headers["x-api-key"] = config["api_key"]

    def payload(self, call):
        """Return the request body: the system prompt is a top-level field, not a message."""
        body = {"model": call.name, "messages": call.messages, "max_tokens": call.max_tokens}
        if call.system:
            body["system"] = call.system
        if call.stream:
            body["stream"] = True
        return body

    async def stream(self, call):
        """Yield the reply's text as it arrives, one string per network read."""
        async with post(call, self.url, self.payload(call), self.headers) as response:
            if not call.stream:
                yield read_message(call, await response.aread(), response.status_code)
                return

            async for text in texts(body(response), partial(read_stream_event, call)):
                yield text
            if not call.finish_reason:  # no message_stop is tolerable once message_delta said why it ended
                raise UpstreamError("The upstream ended the stream before the reply was finished.")


def read_stream_event(call, event):
    """Read one event of a stream: `message_stop` ends it (at message_delta's stop reason, or else `end_turn`)."""
    if event.event == "message_stop":
        call.finish_reason = call.finish_reason or "end_turn"
        return END
    return read_event(call, event)


def read_event(call, event):
    """Record one streamed event's usage and stop reason on `call`; return its text."""
    kind = event.event
    if kind == "ping":
        return ""
    try:
        data = json.loads(event.data)
    except ValueError:
        raise UpstreamError("The upstream sent a malformed event.", detail=repr(event.data[:120])) from None
    if not isinstance(data, dict):
        raise UpstreamError("The upstream sent an unexpected event.", detail=repr(event.data[:120]))
    kind = data.get("type", kind)
    if kind == "content_block_delta":
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            call.pieces += 1
            return delta["text"]
    elif kind == "message_start":
        message = data.get("message") or {}
        call.upstream_model = message.get("model") or ""
        usage = message.get("usage") or {}
        # output_tokens here is a placeholder (often 1): only message_delta's count is real.
        call.usage = Usage(prompt_tokens=input_tokens(usage))
        read_cache(call.usage, usage)
        call.usage_partial = True
    elif kind == "message_delta":
        usage = data.get("usage") or {}
        if call.usage is None:
            call.usage = Usage()
        if "input_tokens" in usage:  # cumulative, like output_tokens: assign, never add
            call.usage.prompt_tokens = input_tokens(usage)
            read_cache(call.usage, usage)
        if usage.get("output_tokens") is not None:  # a null count reports nothing: the usage stays estimated
            call.usage.completion_tokens = int(usage["output_tokens"] or 0)
            call.usage_partial = False
        stop = (data.get("delta") or {}).get("stop_reason")
        if stop:
            call.finish_reason = stop
    elif kind == "error":
        error = data.get("error") or {}
        message = error.get("message") or error.get("type") or "error"
        code = "rate_limited" if error.get("type") == "rate_limit_error" else "upstream_error"
        raise UpstreamError("The upstream failed mid-stream.", code=code, detail=str(message))
    return ""


def input_tokens(usage):
    """Return all input tokens: Anthropic counts cache reads and writes apart from input_tokens."""
    return (
        int(usage.get("input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
        + int(usage.get("cache_creation_input_tokens") or 0)
    )


def read_cache(into, usage):
    """Set the cache reads and writes that an Anthropic usage object reports (both are part of the prompt).

    Writes for a 1-hour cache are priced at the one cache-write rate (LiteLLM's 5-minute rate): chatsite sends no
    cache_control, so writes only come from a gateway's own caching.
    """
    if "cache_read_input_tokens" in usage:
        into.cached_tokens = int(usage["cache_read_input_tokens"] or 0)
    if "cache_creation_input_tokens" in usage:
        into.cache_write_tokens = int(usage["cache_creation_input_tokens"] or 0)


def read_message(call, body, status):
    """Record a non-streamed message's usage on `call`; return its text."""
    try:
        message = json.loads(body)
        blocks = message["content"]
        text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UpstreamError(f"The upstream sent an unreadable message (HTTP {status}).") from None
    usage = message.get("usage") or {}
    call.upstream_model = message.get("model") or ""
    call.finish_reason = message.get("stop_reason") or "end_turn"
    if usage.get("output_tokens") is not None:  # no count (or a null one) leaves the usage to be estimated
        call.usage = Usage(prompt_tokens=input_tokens(usage), completion_tokens=int(usage["output_tokens"]))
        read_cache(call.usage, usage)
    call.pieces = 1 if text else 0
    return text
