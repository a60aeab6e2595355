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
    """Served by daphne the middleware runs in the handler's async mode: the header is there too."""
    from django.test import AsyncClient

    response = await AsyncClient().get("/")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == POLICY
