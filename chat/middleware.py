"""The websocket's identity: its session and user, read once when the socket opens."""

from importlib import import_module

from channels.auth import get_user
from django.conf import settings
from django.http.cookie import parse_cookie


class SessionAuthMiddleware:
    """Put the page's session and user in the scope, without wrapping every frame sent.

    Channels' AuthMiddlewareStack does the same but wraps `send` to save sessions on HTTP
    responses: a cost on every frame a websocket sends, for a session a socket never saves.
    Loading the user loads the session; a cookie naming no session leaves `session_key` None.
    """

    def __init__(self, inner):
        self.inner = inner
        self.store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope, receive, send):
        cookie = b";".join(value for name, value in scope.get("headers", ()) if name == b"cookie")
        cookies = parse_cookie(cookie.decode("latin-1"))
        scope = dict(scope, cookies=cookies, session=self.store(cookies.get(settings.SESSION_COOKIE_NAME)))
        scope["user"] = await get_user(scope)
        return await self.inner(scope, receive, send)
