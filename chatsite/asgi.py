"""ASGI entry point: the API endpoint for /v1/, Django for other HTTP, the chat consumer for websockets."""

import os
import sys

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
try:
    settings.INSTALLED_APPS
except ImproperlyConfigured as exc:  # one line naming the variable, not daphne's traceback
    sys.exit(f"chatsite: {exc}")
django.setup(set_prefix=False)

from chatsite import autobahn_log  # noqa: E402
from chatsite.handler import Handler  # noqa: E402 - after setup: it loads the middleware

autobahn_log.install()  # no pretty-printing per websocket handshake for a debug log that is off

django_asgi_app = Handler()

from chat.middleware import SameOriginMiddleware, SessionAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chatsite.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from gateway.endpoint import mount  # noqa: E402

# Channels' routers and the middlewares as plain callables where they can be (chatsite/routing.py):
# an open socket's task waits in SessionAuthMiddleware's coroutine, the consumer's and its receive.
application = ProtocolTypeRouter(
    {
        # Static files are served by ServeStatic in chatsite.handler, so plain daphne needs no front server.
        # /v1/ is the OpenAI-compatible endpoint, a small ASGI app of its own (gateway/endpoint.py).
        "http": mount(django_asgi_app),
        "websocket": SameOriginMiddleware(SessionAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
