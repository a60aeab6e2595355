"""The session engine: Django's cached_db sessions, without a SELECT before each new session's insert.

Django draws a new key and asks the database whether it is taken before inserting the row; the
insert itself is made with must_create, so a taken key fails it (CreateError) and Django draws
again. The SELECT is a query on every new session (the page's first send, every sign-in) for a
collision of 32 characters from 36 (165 bits); the insert's unique key alone is enough.

The key is drawn as Django draws it, 32 characters from 36, from one os.urandom call instead of
32 (chatsite.randomness).
"""

from django.contrib.sessions.backends import cached_db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS

from chatsite.randomness import random_string


class SessionStore(cached_db.SessionStore):
    def _get_new_session_key(self):
        """Return a new random key, not looked up first: create() inserts it with must_create."""
        return random_string(32, VALID_KEY_CHARS)
