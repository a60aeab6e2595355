"""A strict Content-Security-Policy on every response: scripts, styles and sockets from this site only.

Our own few lines rather than django-csp: the page and the admin use no inline script or style, so
the policy is one constant with no nonces, hashes or per-view exceptions, which is what django-csp
adds. Should that change (a nonce for an inline script), django-csp is the one to take.
"""

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.utils.decorators import sync_and_async_middleware

POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # data: for the page's empty favicon
    "connect-src 'self'",  # CSP 3: 'self' also allows ws:/wss: to the same host (the chat socket)
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))


def add_policy(response):
    """Return the response with the policy header, unless it sets a policy of its own."""
    # Django's debug error pages are made of inline style and script; leave them readable.
    if settings.DEBUG and response.status_code >= 400:
        return response
    response.headers.setdefault("Content-Security-Policy", POLICY)
    return response


@sync_and_async_middleware
def ContentSecurityPolicyMiddleware(get_response):  # noqa: N802 - named as the middleware class it replaced
    """Add POLICY to every response, in the mode of the handler it wraps.

    A MiddlewareMixin under the ASGI handler runs its process_response in a thread (a hand-off per
    request); a header needs no thread.
    """
    if iscoroutinefunction(get_response):
        async def middleware(request):
            return add_policy(await get_response(request))
    else:
        def middleware(request):
            return add_policy(get_response(request))
    return middleware
