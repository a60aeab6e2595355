"""System checks that name the setting to fix when the chat configuration is wrong."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def check_providers(app_configs, **kwargs):
    """Check that every provider in CHAT_MODELS can be reached: a base URL, and a key where one is needed."""
    problems = []
    for prefix, provider in settings.CHAT_PROVIDERS.items():
        upper = prefix.upper().replace("-", "_")
        if provider["api"] == "demo":
            continue
        if not provider["base_url"].startswith(("http://", "https://")):
            problems.append(
                Error(
                    f"No base URL for provider {prefix!r}.",
                    hint=f"Set {upper}_BASE_URL to the server's URL, e.g. http://127.0.0.1:11434/v1.",
                    id="chat.E001",
                )
            )
        if not provider["api_key"] and provider["base_url"].startswith("https://"):
            problems.append(
                Warning(
                    f"No API key for provider {prefix!r}.",
                    hint=f"Set {upper}_API_KEY, unless the server needs none.",
                    id="chat.W001",
                )
            )
    if settings.CHAT_FLUSH_MS < 0:
        problems.append(Error("CHAT_FLUSH_MS is negative.", hint="Set CHAT_FLUSH_MS to 0 or more.", id="chat.E002"))
    return problems
