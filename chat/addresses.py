"""The client's network address: the socket's peer, or X-Forwarded-For when the peer is our own proxy."""

import ipaddress
from functools import lru_cache

from django.conf import settings

UNKNOWN = "unknown"  # no peer in the scope (a Unix socket): everyone there shares one address's limits


@lru_cache(maxsize=8)
def _networks(proxies):
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def trusted_networks():
    """Return CHAT_TRUSTED_PROXIES as networks (addresses or CIDRs)."""
    return _networks(tuple(settings.CHAT_TRUSTED_PROXIES))


def _parse(text):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def is_trusted(address, networks=None):
    """Return True when `address` (a string) is one of CHAT_TRUSTED_PROXIES."""
    ip = _parse(address) if isinstance(address, str) else address
    if ip is None:
        return False
    networks = trusted_networks() if networks is None else networks
    return any(ip in network for network in networks)


def client_address(scope):
    """Return the client's address for an ASGI scope (HTTP or websocket), as a normalised string.

    The peer is the client unless it is in CHAT_TRUSTED_PROXIES; then X-Forwarded-For is read from
    its right end, skipping our own proxies, and the first other address is the client. A header the
    client wrote itself sits left of what our proxies appended, so it is never believed.
    """
    peer = (scope.get("client") or (None, None))[0]
    if not peer:
        return UNKNOWN
    peer_ip = _parse(peer)
    networks = trusted_networks()
    if peer_ip is None or not networks or not any(peer_ip in network for network in networks):
        return str(peer_ip) if peer_ip is not None else peer
    forwarded = [
        value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == b"x-forwarded-for"
    ]
    hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    client = peer_ip
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            break  # garbage: believe nothing further left
        client = ip
        if not any(ip in network for network in networks):
            break
    return str(client)
