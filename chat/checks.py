"""System checks that name the setting to fix when the chat configuration is wrong.

Each value is checked on its own when settings are read (chatsite.env); these checks are about the
relations between settings, and about reaching the providers.
"""

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
    return problems


@register()
def check_limits(app_configs, **kwargs):
    """Check that the size limits and timeouts agree with each other."""
    problems = []
    if settings.CHAT_MAX_HISTORY_CHARS < settings.CHAT_MAX_PROMPT_CHARS:
        problems.append(
            Warning(
                "CHAT_MAX_HISTORY_CHARS is below CHAT_MAX_PROMPT_CHARS: a long message is sent without its history.",
                hint="Set CHAT_MAX_HISTORY_CHARS to at least CHAT_MAX_PROMPT_CHARS (twice is usual).",
                id="chat.W002",
            )
        )
    if settings.CHAT_RETRIES and settings.CHAT_RETRY_MAX_WAIT < settings.CHAT_RETRY_BACKOFF:
        problems.append(
            Warning(
                "CHAT_RETRY_MAX_WAIT is below CHAT_RETRY_BACKOFF: every retry waits CHAT_RETRY_MAX_WAIT.",
                hint="Raise CHAT_RETRY_MAX_WAIT or lower CHAT_RETRY_BACKOFF.",
                id="chat.W003",
            )
        )
    if settings.CHAT_FIRST_TOKEN_TIMEOUT <= settings.CHAT_CONNECT_TIMEOUT:
        problems.append(
            Warning(
                "CHAT_FIRST_TOKEN_TIMEOUT is not above CHAT_CONNECT_TIMEOUT: a slow connect fails as a first-token timeout.",
                hint="Set CHAT_FIRST_TOKEN_TIMEOUT above CHAT_CONNECT_TIMEOUT (defaults: 60 and 10 seconds).",
                id="chat.W004",
            )
        )
    return problems


@register(deploy=True)
def check_proxy(app_configs, **kwargs):
    """Check that a site behind a TLS proxy also tells per-address limits which peer is that proxy."""
    if settings.SECURE_PROXY_SSL_HEADER and not settings.CHAT_TRUSTED_PROXIES:
        return [
            Warning(
                "SECURE_PROXY_SSL_HEADER says a proxy is in front, but CHAT_TRUSTED_PROXIES is empty: every "
                "visitor counts as the proxy's address for per-address limits.",
                hint="Set CHAT_TRUSTED_PROXIES to the proxy's addresses (127.0.0.1 for nginx on the same host).",
                id="chat.W006",
            )
        ]
    return []


@register(deploy=True)
def check_static_files(app_configs, **kwargs):
    """Check that `collectstatic` has run, so static files have hashed names and far-future caching."""
    from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage

    if isinstance(staticfiles_storage, ManifestFilesMixin) and not staticfiles_storage.hashed_files:
        return [
            Warning(
                "Static files are served under their plain names, with a short cache lifetime.",
                hint=f"Run `manage.py collectstatic --noinput` (into STATIC_ROOT={settings.STATIC_ROOT}).",
                id="chat.W005",
            )
        ]
    return []
