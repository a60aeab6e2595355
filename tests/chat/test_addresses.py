"""The client address behind per-address limits: the peer, or X-Forwarded-For only from our proxies."""

from chat.addresses import UNKNOWN, client_address, is_trusted


def scope(peer, *forwarded):
    headers = [(b"host", b"localhost")] + [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"type": "websocket", "client": [peer, 51234] if peer else None, "headers": headers}


def test_it_uses_the_peer_and_ignores_forwarded_headers_from_strangers(settings):
    settings.CHAT_TRUSTED_PROXIES = []
    assert client_address(scope("203.0.113.7", "1.2.3.4")) == "203.0.113.7"
    settings.CHAT_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(scope("203.0.113.7", "1.2.3.4")) == "203.0.113.7"


def test_it_believes_forwarded_for_only_from_a_trusted_proxy(settings):
    settings.CHAT_TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    assert client_address(scope("127.0.0.1", "198.51.100.9")) == "198.51.100.9"
    # A client that writes its own header is only believed about the address our proxy saw.
    assert client_address(scope("127.0.0.1", "6.6.6.6, 198.51.100.9")) == "198.51.100.9"
    # Two of our proxies in a row: skip both.
    assert client_address(scope("127.0.0.1", "198.51.100.9, 10.1.2.3")) == "198.51.100.9"
    # Several headers are one list, in order.
    assert client_address(scope("127.0.0.1", "6.6.6.6", "198.51.100.9")) == "198.51.100.9"
    # No header, or garbage: the proxy itself.
    assert client_address(scope("127.0.0.1")) == "127.0.0.1"
    assert client_address(scope("127.0.0.1", "not-an-address")) == "127.0.0.1"


def test_it_normalises_ipv6_and_handles_a_missing_peer(settings):
    settings.CHAT_TRUSTED_PROXIES = ["::1"]
    assert client_address(scope("::1", "2001:DB8::0001")) == "2001:db8::1"
    assert client_address(scope(None)) == UNKNOWN
    assert is_trusted("::1") and not is_trusted("::2") and not is_trusted("nonsense")
