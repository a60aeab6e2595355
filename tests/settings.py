"""Settings for the test suite: the project's own, with a fixed key and fast password hashing."""

import os

os.environ.setdefault("SECRET_KEY", "chatsite-test-key")

from chatsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CHAT_DEMO_TTFT_MS = 5
CHAT_DEMO_GAP_MS = 1
CHAT_RETRY_BACKOFF = 0.01
# Connections opened in Channels' worker threads must not outlive a test (the test database is dropped after).
if "pool" not in DATABASES["default"].get("OPTIONS", {}):  # noqa: F405
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
# The suite's sockets share one address (WebsocketCommunicator has no peer) and many share a person:
# per-address and per-person caps are off here and switched on by the tests of them (tests/chat/test_guards.py).
CHAT_IP_RATE_LIMIT = 0
CHAT_MAX_INFLIGHT_PER_PERSON = CHAT_MAX_INFLIGHT_PER_ADDRESS = 0
CHAT_MAX_SOCKETS_PER_PERSON = CHAT_MAX_SOCKETS_PER_ADDRESS = 0
