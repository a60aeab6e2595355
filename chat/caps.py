"""Fair shares of one server process: open sockets and replies in flight per person and per address.

These caps guard what a process has a fixed amount of (its CHAT_MAX_CONCURRENT generation slots,
its sockets), so they are counted in the process, with no I/O on the way: with N processes behind a
load balancer a person can hold at most N times their share in total, and never more than their
share of any one process. Money is guarded across processes by the budgets (billing/budgets.py),
message rates by the shared cache. Signed-in users are counted per account only; anonymous
visitors per session and per client address, so dropping the cookie gains nothing.
"""

from collections import Counter

from django.conf import settings

from chat.protocol import ProtocolError

_sockets = Counter()
_inflight = Counter()


def _keys(owner):
    keys = [("person", owner.key)]
    if not owner.user_id:
        keys.append(("address", owner.address))
    return keys


def _limits(kind, owner, person_limit):
    return {"person": person_limit,
            "address": getattr(settings, f"CHAT_MAX_{kind}_PER_ADDRESS")}


class Full(ProtocolError):
    """A cap is reached (`busy`); `scope` is `person` or `address`, the message says which."""

    def __init__(self, message, scope):
        super().__init__(message, "busy")
        self.scope = scope


def _take(counter, kind, owner, person_limit, what):
    limits = _limits(kind, owner, person_limit)
    keys = _keys(owner)
    for scope, key in keys:
        limit = limits[scope]
        if limit and counter[(scope, key)] >= limit:
            whose = "you have" if scope == "person" else "your network address has"
            raise Full(f"Too many {what}: {whose} {limit} already. Close one, or wait for one to finish.", scope)
    for pair in keys:
        counter[pair] += 1
    return keys


def _give(counter, keys):
    for pair in keys:
        counter[pair] -= 1
        if counter[pair] <= 0:
            del counter[pair]


def open_socket(owner):
    """Count a socket for `owner`, or raise Full past CHAT_MAX_SOCKETS_PER_PERSON / _PER_ADDRESS; return a ticket."""
    return _take(_sockets, "SOCKETS", owner, settings.CHAT_MAX_SOCKETS_PER_PERSON, "open connections")


def close_socket(ticket):
    """Give back a socket's place."""
    _give(_sockets, ticket)


def start_reply(owner, limit=None):
    """Count a reply in flight for `owner`, or raise Full past its cap; return a ticket for finish_reply."""
    person = settings.CHAT_MAX_INFLIGHT_PER_PERSON if limit is None else limit
    return _take(_inflight, "INFLIGHT", owner, person, "replies in flight")


def finish_reply(ticket):
    """Give back a reply's place."""
    _give(_inflight, ticket)


def counts():
    """Return (sockets, replies in flight) counted now, for tests and diagnostics."""
    return dict(_sockets), dict(_inflight)
