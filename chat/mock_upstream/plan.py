"""Parse a generation request and the `+key=value` options of its model name into what to answer."""

import json
import math
import re
import zlib

from chat.providers import TOKEN

WORDS = tuple(
    "the a model token stream reply relay socket quick answer river stone light paper cloud green "
    "small bright window garden simple value signal market number letter silver orange basket "
    "planet engine little yellow bridge forest castle rocket pencil circle winter summer thunder "
    "mirror coffee travel button secret ladder velvet harbor candle marble meadow pepper canyon "
    "lantern island copper falcon violet anchor cotton saddle orchard".split()
)
WORD_JSON = tuple(json.dumps(word + " ").encode() for word in WORDS)  # 64 words: any odd stride visits all
CANNED = {
    "xss": (
        "Here is **bold** text, an image <img src=x onerror=alert(1)> and a script "
        "<script>alert(1)</script> that must never run."
    ),
    "markdown": (
        "# A heading\n\nSome text before a list:\n\n- first item\n- second item\n- third item\n\n"
        '```python\ndef greet(name):\n    return f"Hello, {name}!"  # a line too wide for a phone: it scrolls sideways\n```\n\n'
        "| name | value |\n|---|--:|\n| alpha | 1 |\n| beta | 2 |\n"
    ),
}
CANNED["hostile"] = (  # Markdown's own ways to smuggle script or markup: links, images, raw HTML, entities
    "[a fine link](https://example.com/a?b=1&c=2) [a link](javascript:alert(1)) [another](JAVASCRIPT:alert(1)) [data](data:text/html;base64,PHNjcmlwdD4=) "
    '![an image](x" onerror="alert(1)) <a href="javascript:alert(1)" onclick="alert(1)">raw link</a>\n\n'
    "<iframe src=\"javascript:alert(1)\"></iframe>\n\n<svg onload=alert(1)>\n\n"
    "&lt;script&gt;alert(1)&lt;/script&gt; and `<script>alert(1)</script>`\n\n"
    "```html\n<img src=x onerror=alert(1)>\n```\n"
)
DATE_SUFFIX = "-2025-04-14"
OPTIONS = {"ttft": float, "gap": float, "tokens": int, "cached": int, "cache_write": int, "cost": float,
           "reply": str, "fault": str, "after": int, "retry_after": float}
STATUS_FAULT = re.compile(r"(400|401|429|500|502|503|504)(?:x(\d+))?")
FAULTS = {"echo_key", "drop_before", "stall_first", "stall_mid", "drop_mid", "malformed", "error_mid", "rate_limit_mid",
          "no_usage", "null_usage", "no_done", "no_finish"}


class BadRequest(Exception):
    """The request cannot be served; answered with a 400 in the protocol's error shape."""



class Plan:
    """What to answer to one generation request."""

    def __init__(self, api, payload, body, mock):
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
            raise BadRequest("'model' is required.")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("'messages' must be a non-empty list of objects.")
        self.api, self.requested = api, payload["model"]
        self.name, opts = parse_model(self.requested)
        self.model = self.name if re.search(r"-\d{4}-\d{2}-\d{2}$", self.name) else self.name + DATE_SUFFIX
        self.fault = opts.get("fault", "")
        self.ttft = opts.get("ttft", mock.ttft_ms) / 1000
        self.gap = opts.get("gap", mock.gap_ms) / 1000
        self.after = max(0, opts.get("after", 3))
        self.retry_after = opts.get("retry_after", 1)
        self.stream = payload.get("stream") is True
        self.include_usage = api == "anthropic" or bool((payload.get("stream_options") or {}).get("include_usage"))
        chars = sum(len(text_of(m.get("content"))) for m in messages) + len(text_of(payload.get("system")))
        self.prompt_tokens = max(1, math.ceil(chars / 4))
        self.cached = min(max(0, opts.get("cached", mock.cached)), self.prompt_tokens)
        self.cache_write = min(max(0, opts.get("cache_write", 0)), self.prompt_tokens - self.cached)
        self.cost = opts.get("cost")  # the upstream's own figure, as LiteLLM and OpenRouter report it
        users = [m for m in messages if m.get("role") == "user"]
        self.tag = text_of(users[-1].get("content")) if users else ""
        limit = payload.get("max_tokens") if api == "anthropic" else (
            payload.get("max_completion_tokens") or payload.get("max_tokens"))
        if api == "anthropic" and limit is None:
            raise BadRequest("max_tokens: Field required")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise BadRequest("max_tokens must be a positive integer.")
        if "reply" in opts:
            words = TOKEN.findall(CANNED[opts["reply"]])
        else:
            seed = zlib.crc32(body)
            start, stride = seed & 63, ((seed >> 6) & 31) * 2 + 1
            count = max(0, opts.get("tokens", mock.tokens))
            words = [WORDS[(start + i * stride) & 63] + " " for i in range(count)]
        self.truncated = limit is not None and limit < len(words)
        self.words = words[:limit] if self.truncated else words

    @property
    def finish_reason(self):
        """Return the protocol's reason for the end of a complete reply."""
        if self.api == "openai":
            return "length" if self.truncated else "stop"
        return "max_tokens" if self.truncated else "end_turn"

    def usage(self, sent):
        """Return the protocol's usage object for a reply of `sent` tokens (counts null under null_usage)."""
        if self.fault == "null_usage":
            if self.api == "openai":
                return {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
            return {"input_tokens": None, "output_tokens": None}
        if self.api == "openai":
            details = {"cached_tokens": self.cached, "audio_tokens": 0}
            if self.cache_write:
                details["cache_write_tokens"] = self.cache_write  # OpenRouter's name for cache writes
            usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": sent,
                     "total_tokens": self.prompt_tokens + sent, "prompt_tokens_details": details,
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
            if self.cost is not None:
                usage["cost"] = self.cost
        else:
            usage = {"input_tokens": self.prompt_tokens - self.cached - self.cache_write, "output_tokens": sent}
            if self.cached or self.cache_write:
                usage.update(cache_read_input_tokens=self.cached, cache_creation_input_tokens=self.cache_write)
        return usage


def parse_model(requested):
    """Return (name, options) from `name+key=value+key=value`; raise BadRequest on a bad option."""
    name, *parts = requested.split("+")
    opts = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if key not in OPTIONS or not eq:
            raise BadRequest(f"Unknown mock option {part!r}: use one of {', '.join(OPTIONS)} as key=value.")
        try:
            opts[key] = OPTIONS[key](value)
        except ValueError:
            raise BadRequest(f"Mock option {key} needs a number, not {value!r}.") from None
    if opts.get("reply", "xss") not in CANNED:
        raise BadRequest(f"Unknown canned reply {opts['reply']!r}: use one of {', '.join(CANNED)}.")
    fault = opts.get("fault")
    if fault is not None and fault not in FAULTS and not STATUS_FAULT.fullmatch(fault):
        raise BadRequest(f"Unknown mock fault {fault!r}.")
    return name, opts


def text_of(content):
    """Return the text of a message content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
