"""The websocket's gatekeepers: its Host and Origin, then its session and user, read once when it opens."""

import asyncio
from importlib import import_module
from urllib.parse import urlsplit

from channels.auth import get_user
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host

from chatsite.routing import returns_awaitable

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url):
    """Return (scheme, host, port) of an origin or URL, the default port filled in; None when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


class SameOriginMiddleware:
    """Refuse a socket whose Host is not in ALLOWED_HOSTS, or whose Origin is not the page's own.

    As Django's CSRF check does for a POST: the Origin must match the socket's own scheme, host and
    port (https when SECURE_PROXY_SSL_HEADER says the proxy took TLS), or be one of
    CHAT_ALLOWED_ORIGINS. A refused socket is closed before it is accepted (HTTP 403).

    A plain callable returning the inner application's awaitable (or the denier's): no coroutine
    frame of its own waits in an open socket's task (chatsite/routing.py).
    """

    def __init__(self, inner):
        self.inner = inner
        self.allowed_origins = {origin_of(origin) for origin in settings.CHAT_ALLOWED_ORIGINS}

    @returns_awaitable
    def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self.allowed(scope):
            return WebsocketDenier()(scope, receive, send)
        return self.inner(scope, receive, send)

    def allowed(self, scope):
        headers = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, value.decode("latin-1"))
        host = headers.get(b"host", "")
        domain, _ = split_domain_port(host)
        allowed_hosts = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed_hosts:
            allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
        if not domain or not validate_host(domain, allowed_hosts):
            return False
        origin = origin_of(headers.get(b"origin", ""))
        if origin is None:
            return False
        return origin == origin_of(f"{self.scheme(scope, headers)}://{host}") or origin in self.allowed_origins

    @staticmethod
    def scheme(scope, headers):
        """Return the page's scheme: the socket's own, or what the trusted proxy's header says."""
        if settings.SECURE_PROXY_SSL_HEADER:
            name, secure_value = settings.SECURE_PROXY_SSL_HEADER
            value = headers.get(name.removeprefix("HTTP_").lower().replace("_", "-").encode())
            if value is not None:
                return "https" if value.split(",")[0].strip() == secure_value else "http"
        return "https" if scope.get("scheme") == "wss" else "http"


class SessionAuthMiddleware:
    """Put the page's session and user in the scope, without wrapping every frame sent.

    Channels' AuthMiddlewareStack does the same but wraps `send` to save sessions on HTTP
    responses: a cost on every frame a websocket sends, for a session a socket never saves.
    Loading the user loads the session; a cookie naming no session leaves `session_key` None.

    Its coroutine waits in an open socket's task for the socket's life, so it keeps no local there:
    the scope it was given (the server's) and the one it made (the inner application makes its own
    copy or keeps this one) are dropped before it awaits the inner application. The session and
    user are loaded in a task of their own (`in_own_context`), so the socket's task keeps none of
    the context variables that loading sets.
    """

    def __init__(self, inner):
        self.inner = inner
        self.store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope, receive, send):
        inner = self.inner(await in_own_context(self.authenticated(scope)), receive, send)
        del scope, receive, send
        return await inner

    async def authenticated(self, scope):
        """Return a copy of `scope` with the request's cookies, its session and its user."""
        cookie = b";".join(value for name, value in scope.get("headers", ()) if name == b"cookie")
        cookies = parse_cookie(cookie.decode("latin-1"))
        scope = dict(scope, cookies=cookies, session=self.store(cookies.get(settings.SESSION_COOKIE_NAME)))
        scope["user"] = await get_user(scope)
        return scope


async def in_own_context(awaitable):
    """Await `awaitable` (database or cache work) in a task of its own, so the context variables it
    sets stay in that task's context and go with it: Django's cache objects live in an asgiref
    Local (a context variable), and asgiref's `sync_to_async` copies back into its caller's context
    its thread-executor flag and the Locals the call filled. A socket's task lives as long as the
    socket, and would keep them all that time (a cache object and its context entries, ~0.7 KB;
    more with Redis's cache client). Cancelling the caller cancels the task."""
    return await asyncio.get_running_loop().create_task(awaitable)
