"""Secrets drawn from one os.urandom call (chatsite.randomness): the distribution, and who draws with it."""

import string
from collections import Counter

import pytest
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.middleware.csrf import CSRF_ALLOWED_CHARS
from django.test import Client

from chatsite import randomness

CHARS = string.ascii_letters + string.digits  # 62: bytes 248 to 255 are drawn again


def bytes_from(*chunks):
    """Return an os.urandom stand-in that hands out `chunks` in turn, and the sizes asked for."""
    asked, chunks = [], iter(chunks)

    def urandom(n):
        asked.append(n)
        chunk = next(chunks)
        return (chunk * n)[:n] if len(chunk) == 1 else chunk

    return urandom, asked


def test_it_maps_each_byte_below_the_limit_to_a_character_and_draws_again_for_the_rest(monkeypatch):
    urandom, asked = bytes_from(bytes([247, 248, 255, 0, 61]), bytes([62, 123, 249]))
    monkeypatch.setattr(randomness.os, "urandom", urandom)
    assert randomness.random_string(5, CHARS) == CHARS[61] + CHARS[0] + CHARS[61] + CHARS[0] + CHARS[123 % 62]
    assert asked == [5 + 8, 2 + 8]  # one call for all of it, one more for the two bytes refused


def test_it_draws_every_character_about_equally_often():
    drawn = Counter(randomness.random_string(124_000, CHARS))
    assert set(drawn) == set(CHARS)
    # 2,000 expected each; a biased map (byte % 62 over all 256 bytes) gives the first 8 characters ~2,480.
    assert all(1_750 < n < 2_250 for n in drawn.values()), drawn.most_common(3) + drawn.most_common()[-3:]


@pytest.mark.parametrize("size", [0, 257])
def test_it_refuses_an_alphabet_it_cannot_draw_from_uniformly(size):
    with pytest.raises(ValueError, match="1 to 256"):
        randomness.random_string(8, "x" * size)


@pytest.mark.django_db
def test_a_first_visits_csrf_secret_and_its_session_key_come_from_it(monkeypatch):
    urandom, asked = bytes_from(b"\x05", b"\x07", b"\x03")  # the secret, the token's mask, the session key
    monkeypatch.setattr(randomness.os, "urandom", urandom)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/").content.decode()
    assert client.cookies["csrftoken"].value == CSRF_ALLOWED_CHARS[5] * 32
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert token[:32] == CSRF_ALLOWED_CHARS[7] * 32  # the mask, then the masked secret
    assert client.post("/session/").status_code == 403  # CSRF still checked
    response = client.post("/session/", headers={"X-CSRFToken": token})
    assert response.status_code == 201
    assert response.cookies["sessionid"].value == VALID_KEY_CHARS[3] * 32
    assert asked == [40, 40, 40]
