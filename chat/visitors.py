"""Anonymous visitors, known by a keyed hash of their session key: the key itself is never stored.

A session key is a bearer credential: pasted as a cookie, it opens that visitor's conversations.
Conversations, usage records, reports, the admin and the CSV hold only this hash (HMAC-SHA256 under
SECRET_KEY, 128 bits), from which the key cannot be recovered or forged.
"""

from django.utils.crypto import salted_hmac

SALT = "chatsite.visitor"
LENGTH = 32  # hex digits: 128 bits of HMAC-SHA256


def visitor_hash(session_key, secret=None):
    """Return the hash that stands for an anonymous session in stored data ("" for no session)."""
    if not session_key:
        return ""
    return salted_hmac(SALT, session_key, secret=secret, algorithm="sha256").hexdigest()[:LENGTH]
