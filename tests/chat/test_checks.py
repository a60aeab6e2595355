"""System checks on the relations between settings (each value alone is checked when settings are read)."""

from chat.checks import check_limits, check_providers, check_proxy


def ids(problems):
    return [problem.id for problem in problems]


def test_it_accepts_the_defaults():
    assert check_limits(None) == []
    assert check_providers(None) == []


def test_it_warns_when_history_cannot_hold_a_long_message(settings):
    settings.CHAT_MAX_PROMPT_CHARS, settings.CHAT_MAX_HISTORY_CHARS = 32_000, 10_000
    assert ids(check_limits(None)) == ["chat.W002"]


def test_it_warns_when_the_longest_retry_wait_is_below_the_first(settings):
    settings.CHAT_RETRY_BACKOFF, settings.CHAT_RETRY_MAX_WAIT = 5, 1
    assert ids(check_limits(None)) == ["chat.W003"]
    settings.CHAT_RETRIES = 0
    assert check_limits(None) == []


def test_it_warns_when_a_slow_connect_would_fail_as_a_first_token_timeout(settings):
    settings.CHAT_CONNECT_TIMEOUT, settings.CHAT_FIRST_TOKEN_TIMEOUT = 10, 10
    problems = check_limits(None)
    assert ids(problems) == ["chat.W004"] and "CHAT_FIRST_TOKEN_TIMEOUT" in problems[0].hint


def test_it_names_the_variable_for_a_provider_without_base_url_or_key(settings):
    settings.CHAT_PROVIDERS = {
        "local": {"api": "openai", "base_url": "", "api_key": ""},
        "openai": {"api": "openai", "base_url": "https://api.openai.com/v1", "api_key": ""},
    }
    problems = check_providers(None)
    assert ids(problems) == ["chat.E001", "chat.W001"]
    assert "LOCAL_BASE_URL" in problems[0].hint and "OPENAI_API_KEY" in problems[1].hint


def test_it_warns_when_a_proxy_is_in_front_but_not_trusted_for_client_addresses(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CHAT_TRUSTED_PROXIES = []
    assert ids(check_proxy(None)) == ["chat.W006"]
    settings.CHAT_TRUSTED_PROXIES = ["127.0.0.1"]
    assert check_proxy(None) == []
