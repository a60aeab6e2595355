"""Anonymous sessions: made when a visitor first sends, never for a mere page view; adopted on sign-in;
expired ones cleared.

Expired sessions are deleted by the process that makes a new one, at most once per CLEAR_EVERY seconds
(across processes when the cache is Redis), so no cron job is needed; `manage.py clearsessions` does
the same on demand.
"""

from importlib import import_module

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from billing.models import UsageRecord
from chat.models import Conversation
from chat.visitors import visitor_hash

CLEAR_EVERY = 3600  # seconds between sweeps of expired sessions
CLEAR_KEY = "chat:sessions:cleared"


def visitor_of(request):
    """Return the keyed hash naming this request's anonymous visitor ("" for a user or no session)."""
    if request.user.is_authenticated:
        return ""
    return visitor_hash(request.session.session_key)


def has_session(request):
    """Return whether the page may open its socket now: a user, or a visitor whose session exists."""
    return request.user.is_authenticated or bool(request.session.session_key)


def start(request):
    """Give this visitor a session if they have none (the session middleware saves it); return if made."""
    if has_session(request):
        return False
    # Marking the session modified makes the session middleware create it once, with no second save.
    request.session["chat"] = 1
    clear_expired_now_and_then()
    return True


def clear_expired_now_and_then():
    """Delete expired sessions, unless this was done less than CLEAR_EVERY seconds ago."""
    if cache.add(CLEAR_KEY, 1, timeout=CLEAR_EVERY):
        import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()


def adopt(visitor, user):
    """Make an anonymous visitor's conversations and usage records those of the user they signed in as."""
    if not visitor:
        return
    with transaction.atomic():
        Conversation.objects.adopt(visitor, user)
        UsageRecord.objects.adopt(visitor, user)
