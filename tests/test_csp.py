"""The Content-Security-Policy header (its effect in a browser is tested in tests/browser/test_accessibility.py)."""

from chatsite.csp import POLICY


def test_it_sends_the_policy_with_the_page_and_the_admin(client, db):
    for url in ("/", "/admin/login/"):
        assert client.get(url).headers["Content-Security-Policy"] == POLICY


def test_it_leaves_debug_error_pages_readable(client, db, settings):
    settings.DEBUG = True
    response = client.get("/c/999999/")
    assert response.status_code == 404
    assert "Content-Security-Policy" not in response.headers


async def test_it_sends_the_policy_through_the_asgi_handler(transactional_db):
    """Served by daphne (chatsite.handler, the middleware in sync mode) the header is there too."""
    from tests.test_asgi import get_with_headers

    status, _, headers = await get_with_headers("/")
    assert status == 200
    assert headers["content-security-policy"] == POLICY


async def test_it_sends_the_policy_in_djangos_own_async_mode(transactional_db):
    """The middleware works in either mode: under Django's async handler (AsyncClient) too."""
    from django.test import AsyncClient

    response = await AsyncClient().get("/")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == POLICY
