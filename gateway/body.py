"""Read and check a chat completion request body; return the upstream Call it asks for."""

import json
from dataclasses import dataclass

from django.conf import settings

from chat.providers import Call
from gateway.errors import ApiError

ROLES = frozenset({"system", "developer", "user", "assistant"})


@dataclass(slots=True)
class Ask:
    """A checked request: the upstream call, and how the caller wants the answer."""

    call: Call
    include_usage: bool

    def worst_case_tokens(self):
        """Return (prompt, completion) tokens this request cannot exceed.

        A token covers at least one byte of UTF-8, plus a few tokens of framing per message, and the
        upstream stops at max_tokens: so the bound holds whatever the tokenizer.
        """
        call = self.call
        size = len(call.system.encode()) + sum(len(m["content"].encode()) for m in call.messages)
        return size + 8 * (len(call.messages) + 1), call.max_tokens


def parse(raw):
    """Return the Ask in a request body, or raise ApiError (400, 404) naming the field to fix."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_request")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: one of GET /v1/models.", "missing_required_parameter", "model")
    if model not in settings.CHAT_MODELS:
        raise ApiError(404, f"The model {model!r} does not exist; GET /v1/models lists them.",
                       "model_not_found", "model")
    system, messages = read_messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", "invalid_type", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", "invalid_type", "stream_options")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = settings.CHAT_MAX_TOKENS
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ApiError(400, "'max_tokens' must be a positive integer.", "invalid_value", "max_tokens")
    call = Call(model=model, messages=messages, stream=stream, system=system, max_tokens=max_tokens)
    return Ask(call, include_usage=stream and options.get("include_usage") is True)


def read_messages(messages):
    """Return (system prompt, the other messages) with their contents as plain text."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array.", "invalid_value", "messages")
    system, turns = [], []
    for index, message in enumerate(messages):
        param = f"messages.[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"{param}: each message needs a role, one of {', '.join(sorted(ROLES))}.",
                           "invalid_value", param + ".role")
        content = text_of(message.get("content"), param)
        if message["role"] in ("system", "developer"):
            system.append(content)
        else:
            turns.append({"role": message["role"], "content": content})
    if not turns:
        raise ApiError(400, "'messages' needs at least one user message.", "invalid_value", "messages")
    return "\n\n".join(system), turns


def text_of(content, param):
    """Return a message's text: a string, or an array of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{param}.content: only text parts are supported.", "invalid_value",
                               param + ".content")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"{param}.content must be a string or an array of text parts.", "invalid_type",
                   param + ".content")
