"""Fixtures that serve the mock upstream and point chatsite at it (a pytest plugin module).

    mock_upstream  session-wide MockUpstream in a thread (fast: 20 ms to first token, 2 ms gap, 12 tokens)
    mock           the same, idle and reset for this test
    use_mock       `mock`, with providers `mock` (OpenAI API) and `mockanthropic` (Anthropic API) configured

Models must also be listed in CHAT_MODELS: `allow(settings, "mock/gpt-4.1-mini+fault=stall_mid")`.
"""

import asyncio
import time

import pytest

from chat.mock_upstream import MockUpstream
from chat.providers.http import close_client


def allow(settings, *models):
    """Add model ids (`mock/...`, `mockanthropic/...`) to settings.CHAT_MODELS."""
    settings.CHAT_MODELS = [*settings.CHAT_MODELS, *(m for m in models if m not in settings.CHAT_MODELS)]


@pytest.fixture(scope="session")
def mock_upstream():
    mock = MockUpstream(ttft_ms=20, gap_ms=2, tokens=12)
    mock.start_in_thread(host="127.0.0.1", port=0)
    yield mock
    mock.stop()


@pytest.fixture
def mock(mock_upstream):
    # Streams a previous test left behind would otherwise be counted in this one.
    mock_upstream.wait_idle(5)
    mock_upstream.reset()
    return mock_upstream


@pytest.fixture
async def use_mock(settings, mock):
    settings.CHAT_PROVIDERS = {
        **settings.CHAT_PROVIDERS,
        "mock": {"api": "openai", "base_url": mock.base_url + "/v1", "api_key": "test-key"},
        "mockanthropic": {"api": "anthropic", "base_url": mock.base_url, "api_key": "test-key"},
    }
    yield mock
    # The test's event loop ends with the test: close its upstream connections with it, so the next
    # test's counts start from none.
    await close_client()
    deadline = time.monotonic() + 2
    while mock.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def upstream_pool():
    """Return (idle, busy) connections in this loop's shared upstream pool (aiohttp's connector)."""
    from chat.providers.http import client

    connector = client()._transport.client.connector
    idle = [proto for conns in connector._conns.values() for proto, _ in conns]
    return idle, list(connector._acquired)
