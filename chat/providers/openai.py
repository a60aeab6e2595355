"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, llama.cpp, DeepSeek, gateways."""

import json
from decimal import Decimal, InvalidOperation
from functools import partial

from chat.providers import UpstreamError, Usage
from chat.providers.http import body, error_message, post
from chat.sse import END, texts


class OpenAIProvider:
    def __init__(self, config):
        self.url = config["base_url"] + "/chat/completions"
        self.headers = {"Accept-Encoding": "identity"}
        if config["api_key"]:
            self.headers["Authorization"] = f"Bearer {config['api_key']}"

    def payload(self, call):
        """Return the request body for `call`."""
        messages = [{"role": "system", "content": call.system}] if call.system else []
        body = {"model": call.name, "messages": messages + call.messages, "max_tokens": call.max_tokens}
        if call.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def stream(self, call):
        """Yield the reply's text as it arrives, one string per network read."""
        async with post(call, self.url, self.payload(call), self.headers) as response:
            if not call.stream:
                yield read_completion(call, await response.aread(), response.status_code)
                return

            async for text in texts(body(response), partial(read_stream_event, call)):
                yield text
            if not call.finish_reason:
                raise UpstreamError("The upstream ended the stream before the reply was finished.")


def read_stream_event(call, event):
    """Read one event of a stream: `[DONE]` ends it (at the last chunk's finish reason, or else `stop`)."""
    if event.data == "[DONE]":
        call.finish_reason = call.finish_reason or "stop"
        return END
    return read_chunk(call, event.data)


def read_chunk(call, data):
    """Record one streamed chunk's usage and finish reason on `call`; return its text."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamError("The upstream sent a malformed event.", detail=repr(data[:120])) from None
    if not isinstance(chunk, dict):
        raise UpstreamError("The upstream sent an unexpected event.", detail=repr(data[:120]))
    if "error" in chunk:
        raise UpstreamError("The upstream reported an error mid-stream.", detail=error_message(data.encode(), "stream"))
    if chunk.get("model"):
        call.upstream_model = chunk["model"]
    if reports_usage(chunk.get("usage")):
        call.usage = read_usage(chunk["usage"])
    choices = chunk.get("choices")
    if not choices:
        return ""
    choice = choices[0]
    if choice.get("finish_reason"):
        call.finish_reason = choice["finish_reason"]
    content = (choice.get("delta") or {}).get("content")
    if content:
        call.pieces += 1
        return content
    return ""


def read_completion(call, body, status):
    """Record a non-streamed completion's usage on `call`; return its text."""
    try:
        completion = json.loads(body)
        message = completion["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UpstreamError(f"The upstream sent an unreadable completion (HTTP {status}).") from None
    call.upstream_model = completion.get("model") or ""
    call.finish_reason = completion["choices"][0].get("finish_reason") or "stop"
    if reports_usage(completion.get("usage")):
        call.usage = read_usage(completion["usage"])
    text = message.get("content") or ""
    call.pieces = 1 if text else 0
    return text


def reports_usage(usage):
    """Return whether an OpenAI usage object counts the reply: one with null counts reports nothing."""
    return isinstance(usage, dict) and usage.get("completion_tokens") is not None


def read_usage(usage):
    """Return the Usage in an OpenAI usage object; cached and cache-write tokens are part of the prompt tokens."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        cache_write_tokens=int(details.get("cache_write_tokens") or 0),
        cost=reported_cost(usage.get("cost")),
    )


def reported_cost(value):
    """Return the upstream's `usage.cost` (LiteLLM, OpenRouter) as a Decimal, or None when absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None  # a gateway's odd figure is no reason to lose the reply; our own cost stands
    return cost if cost.is_finite() and 0 <= cost < 10**9 else None  # what the record's field can hold
