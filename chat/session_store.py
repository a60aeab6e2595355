"""The session engine: Django's cached_db sessions, without a SELECT before each new session's insert.

Django draws a new key and asks the database whether it is taken before inserting the row; the
insert itself is made with must_create, so a taken key fails it (CreateError) and Django draws
again. The SELECT is a query on every new session (the page's first send, every sign-in) for a
collision of 32 characters from 36 (165 bits); the insert's unique key alone is enough.

The key is drawn as Django draws it, 32 characters from 36, from one os.urandom call instead of
32 (chatsite.randomness).

A store looks its cache up when it uses it rather than keeping the cache object it was made with:
a websocket's scope keeps its session for the socket's life, and with it the cache object of the
context that made it (Django's cache objects live in an asgiref Local: one per request, task or
thread). Looked up each time, it is the cache object of the context using the store, as Django's
`caches[alias]` gives anywhere else.
"""

from django.conf import settings
from django.contrib.sessions.backends import cached_db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS

from chatsite.randomness import random_string


class SessionStore(cached_db.SessionStore):
    @property
    def _cache(self):
        return cached_db.caches[settings.SESSION_CACHE_ALIAS]

    @_cache.setter
    def _cache(self, cache):
        """Django's __init__ sets it: it is looked up when used instead."""

    def _get_new_session_key(self):
        """Return a new random key, not looked up first: create() inserts it with must_create."""
        return random_string(32, VALID_KEY_CHARS)
