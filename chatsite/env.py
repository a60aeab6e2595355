"""Read settings from the environment, strictly: a bad value raises ImproperlyConfigured naming its variable.

Modelled on healthchecks' `envbool`/`envint`: `DEBUG=ture` is an error, not "off"; `CHAT_FLUSH_MS=30ms`
names CHAT_FLUSH_MS; values outside their bounds are refused. An empty variable counts as unset.
"""

import os
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ImproperlyConfigured

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def read(name, default, parse=str, *, minimum=None, maximum=None, choices=None):
    """Return `name` from the environment parsed by `parse`, or `default` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except (ValueError, InvalidOperation) as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not valid: {exc}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} is too small: the least is {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} is too large: the most is {maximum}.")
    if choices is not None and value not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}.")
    return value


def _bool(raw):
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ValueError("use 1/0, true/false, yes/no or on/off")


def _int(raw):
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(raw):
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return value


def _decimal(raw):
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError("expected a decimal number such as 0.50") from None
    if not value.is_finite():
        raise ValueError("expected a finite number")
    return value


def _list(raw):
    return [item.strip() for item in raw.split(",") if item.strip()]


def database(raw):
    """Return Django's DATABASES entry for a database URL (`postgres://…`, `sqlite:///…`)."""
    import warnings

    import environ  # django-environ knows every backend's URL scheme

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its "Engine not recognized" warning: the error below says more
        config = environ.Env.db_url_config(raw) if "://" in raw else {}
    if not config.get("ENGINE"):
        raise ValueError("expected a database URL such as postgres://user@host/name or sqlite:///path")
    return config


def origins(raw):
    """Return a comma-separated list of origins, each `scheme://host[:port]` with no path."""
    from urllib.parse import urlsplit

    found = _list(raw)
    for origin in found:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ValueError(f"{origin!r} is not an origin such as https://chat.example.com")
    return found


def header_pair(raw):
    """Return a request header and its value from `HEADER,value` (`X-Forwarded-Proto,https`) in Django's form."""
    name, _, value = (part.strip() for part in raw.partition(","))
    if not name or not value:
        raise ValueError("expected HEADER,value such as X-Forwarded-Proto,https")
    name = name.upper().replace("-", "_")
    return (name if name.startswith("HTTP_") else f"HTTP_{name}"), value


def boolean(name, default):
    """Return a yes/no setting: 1/0, true/false, yes/no or on/off, in any case."""
    return read(name, default, _bool)


def integer(name, default, *, minimum=None, maximum=None):
    """Return a whole-number setting within its bounds."""
    return read(name, default, _int, minimum=minimum, maximum=maximum)


def number(name, default, *, minimum=None, maximum=None):
    """Return a finite number setting (seconds, ratios) within its bounds."""
    return read(name, default, _float, minimum=minimum, maximum=maximum)


def decimal(name, default, *, minimum=None):
    """Return an exact Decimal setting (USD), or `default` (None: off)."""
    return read(name, default, _decimal, minimum=minimum)


def string(name, default="", *, choices=None):
    """Return a string setting, optionally one of `choices`."""
    return read(name, default, str, choices=choices)


def strings(name, default):
    """Return a comma-separated list setting, blanks dropped."""
    return read(name, default, _list)
