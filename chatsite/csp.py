"""A strict Content-Security-Policy on every response: scripts, styles and sockets from this site only.

Our own few lines rather than django-csp: the page and the admin use no inline script or style, so
the policy is one constant with no nonces, hashes or per-view exceptions, which is what django-csp
adds. Should that change (a nonce for an inline script), django-csp is the one to take.
"""

from django.conf import settings
from django.utils.deprecation import MiddlewareMixin

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


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Add POLICY to responses that do not set a policy of their own (sync and async, like Django's own)."""

    def process_response(self, request, response):
        """Return the response with the policy header."""
        # Django's debug error pages are made of inline style and script; leave them readable.
        if settings.DEBUG and response.status_code >= 400:
            return response
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response
