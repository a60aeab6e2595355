"""OpenAI's wire shapes: completion chunks, completions, usage, model lists and errors, as bytes."""

import json
import secrets
import time

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]
DONE = b"data: [DONE]\n\n"
# Upstream stop reasons (Anthropic's, and OpenAI's own) in OpenAI's vocabulary.
FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}
# The error `type` OpenAI gives each status.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
    404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
    429: "rate_limit_error", 502: "api_error", 503: "api_error", 504: "api_error",
}


def completion_id():
    """Return a fresh `chatcmpl-…` id."""
    return "chatcmpl-" + secrets.token_hex(12)


def finish_reason(reason):
    """Return an upstream's stop reason in OpenAI's vocabulary."""
    return FINISH_REASONS.get(reason, reason or "stop")


def usage_object(usage):
    """Return OpenAI's usage object for a Usage."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def error_body(status, message, code=None, param=None):
    """Return an error response body in OpenAI's format."""
    return json.dumps(error_object(status, message, code, param)).encode()


def error_object(status, message, code=None, param=None):
    """Return an error in OpenAI's format, as a dict."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": param, "code": code}}


class Chunks:
    """The `chat.completion.chunk` events of one streamed reply.

    Everything but the text is encoded once per reply, so a delta costs one json.dumps of its text
    and two byte concatenations.
    """

    __slots__ = ("id", "created", "model", "include_usage", "head", "tail")

    def __init__(self, model, include_usage):
        self.id, self.created, self.model, self.include_usage = completion_id(), int(time.time()), model, include_usage
        self.head = ('data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                     '"system_fingerprint":null,"choices":[{"index":0,"delta":{"content":'
                     % (self.id, self.created, json.dumps(model))).encode()
        self.tail = b'},"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"

    def text(self, text):
        """Return the event carrying one delta of text."""
        return self.head + json.dumps(text).encode() + self.tail

    def event(self, choices, usage=None):
        """Return one chunk event with these choices (and, when asked for, the usage field)."""
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def role(self):
        """Return the first event: the assistant role with empty content."""
        return self.event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None}])

    def finish(self, reason, usage):
        """Return the closing events: the finish reason, the usage chunk when asked for, and [DONE]."""
        end = self.event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason(reason)}])
        if self.include_usage:
            end += self.event([], usage_object(usage))
        return end + DONE

    def error(self, status, message, code):
        """Return the event that reports a failure after the reply began (the stream then ends)."""
        return b"data: " + error_body(status, message, code) + b"\n\n"


def completion(model, text, reason, usage):
    """Return a non-streamed `chat.completion` body."""
    return json.dumps(completion_object(model, text, reason, usage)).encode()


def completion_object(model, text, reason, usage):
    """Return a `chat.completion` as a dict."""
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason(reason)}],
        "usage": usage_object(usage),
    }


def model_list(models, created):
    """Return the `GET /v1/models` body for these model ids."""
    data = [{"id": model, "object": "model", "created": created, "owned_by": model.split("/", 1)[0]}
            for model in models]
    return json.dumps({"object": "list", "data": data}).encode()
