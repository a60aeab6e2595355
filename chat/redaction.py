"""Secrets out of text: configured API keys, bearer tokens and `sk-…` keys become `[redacted]`.

Upstream error bodies sometimes echo the request's key (`Incorrect API key provided: Bearer sk-…`);
every upstream error passes through here before it is stored, logged, exported or sent.
"""

import re

from django.conf import settings

REDACTED = "[redacted]"
SHAPES = re.compile(
    r"(?i)(?:\bbearer\s+|\bbasic\s+)[A-Za-z0-9._~+/=-]{6,}"  # Authorization header values
    r"|\bsk-[A-Za-z0-9_-]{6,}"  # OpenAI, Anthropic (sk-ant-…), DeepSeek and many gateways
    r"|(?:api[_-]?key|x-api-key|access[_-]?token)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._~+/-]{6,}"
)


def configured_keys():
    """Return the API keys in the settings, longest first (so one key inside another is never half-hidden)."""
    keys = {config.get("api_key", "") for config in settings.CHAT_PROVIDERS.values()}
    return sorted((k for k in keys if len(k) >= 4), key=len, reverse=True)


def redact(text):
    """Return `text` with every configured key and anything shaped like a key or bearer token replaced."""
    if not text:
        return text
    for key in configured_keys():
        text = text.replace(key, REDACTED)
    return SHAPES.sub(REDACTED, text)
