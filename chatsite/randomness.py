"""Random strings for secrets (CSRF secrets and masks, session keys) from one os.urandom call each.

Django's `get_random_string` draws each character with `secrets.choice`: one `os.urandom` system
call per character, 64 for a first visit's CSRF cookie and token, 32 more for a session key
(~13 % of a page GET's CPU). `random_string` draws the same distribution, each character uniform
over the alphabet and independent, from the same source: bytes of `os.urandom`, a byte kept only
below the largest multiple of the alphabet's size (so `byte % size` is uniform), the rest drawn
again.
"""

import os


def random_string(length, allowed_chars):
    """Return `length` characters drawn uniformly and independently from `allowed_chars`, by os.urandom."""
    size = len(allowed_chars)
    if not 0 < size <= 256:
        raise ValueError(f"random_string needs 1 to 256 characters to draw from, not {size}")
    limit = 256 - 256 % size  # bytes at or above it would favour the first characters: drawn again
    out = []
    while len(out) < length:
        # One call for all of it, with room for the few bytes refused (at most 1 in 4 for any alphabet of
        # Django's secrets; 8 in 256 for the 62 of a CSRF secret, 4 in 256 for the 36 of a session key).
        for byte in os.urandom(length - len(out) + 8):
            if byte < limit:
                out.append(allowed_chars[byte % size])
                if len(out) == length:
                    break
    return "".join(out)


def install():
    """Draw Django's CSRF secrets and masks with random_string (django.middleware.csrf's get_random_string)."""
    from django.middleware import csrf

    csrf.get_random_string = random_string
