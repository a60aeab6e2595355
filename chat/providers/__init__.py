"""Upstream providers behind one small interface.

A provider is an object with `async def stream(call)`: an async iterator of text deltas (one per
network read, however many tokens it held). As it goes it fills in `call.usage`,
`call.finish_reason`, `call.upstream_model` and `call.pieces`; it raises `UpstreamError` when the
upstream refuses or fails. The relay knows nothing else about OpenAI, Anthropic or the demo.
"""

import re
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from chat.protocol import ProtocolError

# A token, where a count has to be made from text: a word piece with the white space before it (the
# demo model's replies, the mock upstream's canned ones).
TOKEN = re.compile(r"\s*\S+|\s+")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # a part of prompt_tokens, priced at the cached rate
    cache_write_tokens: int = 0  # a part of prompt_tokens written to the cache, priced at the cache-write rate
    cost: Decimal | None = None  # what the upstream says the request cost (LiteLLM's, OpenRouter's usage.cost)


@dataclass(slots=True)
class Call:
    """One upstream request: what is asked, and what the upstream has answered so far."""

    model: str  # provider/model as configured
    messages: list  # [{"role": ..., "content": ...}], oldest first
    stream: bool = True
    system: str = ""
    max_tokens: int = 1024
    usage: Usage | None = None
    usage_partial: bool = False  # the upstream reported only part of the usage (a stream cut short)
    finish_reason: str = ""
    upstream_model: str = ""
    pieces: int = 0  # content events received: the completion estimate when usage is missing
    retries: int = 0
    opened: bool = False  # the upstream accepted the request (it may bill for the prompt)
    prompt_chars: int | None = None  # the prompt's size, kept once its text is let go (forget_prompt)

    @property
    def provider(self):
        return self.model.split("/", 1)[0]

    @property
    def name(self):
        """Return the model name the upstream knows (after the provider prefix)."""
        return self.model.split("/", 1)[1]

    def prompt_estimate(self):
        """Return the prompt's size in tokens, estimated at ~4 characters a token."""
        chars = self.prompt_chars
        if chars is None:
            chars = len(self.system) + sum(len(m["content"]) for m in self.messages)
        return max(1, round(chars / 4))

    def forget_prompt(self):
        """The upstream has the request: keep the prompt's size for an estimate, not its text (the
        history and the message can be most of what a long reply holds while it streams)."""
        if self.prompt_chars is None:
            self.prompt_chars = len(self.system) + sum(len(m["content"]) for m in self.messages)
        self.messages = []

    def estimated_usage(self):
        """Return usage estimated from what was sent and received."""
        usage = self.usage or Usage()
        return Usage(
            usage.prompt_tokens or self.prompt_estimate(), max(usage.completion_tokens, self.pieces),
            usage.cached_tokens, usage.cache_write_tokens,
        )


class UpstreamError(ProtocolError):
    """The upstream refused or failed.

    `message` is our own plain sentence, the one a person sees; `detail` is what the upstream said,
    kept on the usage record for the operator. Both are redacted of keys and tokens here, before
    anything can store, log, export or send them. `retry_after` is the seconds the upstream's
    Retry-After asked for, when it sent one.
    """

    def __init__(self, message, code="upstream_error", status=None, retry_after=None, detail=""):
        from chat.redaction import redact

        super().__init__(redact(message), code)
        self.status = status
        self.retry_after = retry_after
        self.detail = redact(detail)

    @property
    def record_text(self):
        """Return the text stored on the usage record: the message, and the upstream's words if any."""
        return f"{self} Upstream said: {self.detail}" if self.detail else str(self)


def timeout_message(reason):
    """Return the message a person sees when the upstream was too slow (`first_token_timeout` or `stall`)."""
    if reason == "first_token_timeout":
        return f"The upstream sent no reply within {settings.CHAT_FIRST_TOKEN_TIMEOUT:g} s."
    return f"The upstream stalled for over {settings.CHAT_STALL_TIMEOUT:g} s mid-reply."


def provider_for(model):
    """Return the provider that serves `model` (`provider/model`), as configured in settings."""
    prefix = model.split("/", 1)[0]
    config = settings.CHAT_PROVIDERS[prefix]
    api = config["api"]
    if api == "demo":
        from chat.providers.demo import DemoProvider

        return DemoProvider()
    if api == "anthropic":
        from chat.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from chat.providers.openai import OpenAIProvider

    return OpenAIProvider(config)
