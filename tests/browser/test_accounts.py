"""Accounts in the browser: a new visitor's first send makes their session; sign-in keeps their chats;
sign-out in one tab closes the socket of another."""

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from playwright.sync_api import expect

from chat.models import Conversation
from tests.browser.conftest import FAST, open_chat, send, wait_for_reply

pytestmark = pytest.mark.browser


def create_user(username, password):
    """Create a user the live server can sign in (it hashes with PBKDF2; these tests' settings with MD5)."""
    User.objects.filter(username=username).delete()
    hasher = PBKDF2PasswordHasher()
    return User.objects.create(username=username, password=hasher.encode(password, hasher.salt()))


def test_it_makes_the_session_with_the_first_message_and_keeps_the_chat_after_signing_in(page, chat_server):
    expect(page.locator("#connection")).to_have_attribute("data-state", "idle")
    assert not [c for c in page.context.cookies() if c["name"] == "sessionid"]
    send(page, "A chat before signing in", FAST)
    wait_for_reply(page)
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    assert Session.objects.filter(session_key=cookie["value"]).exists()

    frank = create_user("frank", "a good password 3")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Username").fill("frank")
    page.get_by_label("Password").fill("a good password 3")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    expect(page.locator("#conversations")).to_contain_text("A chat before signing in")
    assert Conversation.objects.get(title="A chat before signing in").user == frank


def test_it_closes_the_other_tabs_socket_on_sign_out(page, chat_server):
    create_user("grace", "a good password 4")
    page.goto(chat_server.url + "/login/")
    page.get_by_label("Username").fill("grace")
    page.get_by_label("Password").fill("a good password 4")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    other = open_chat(page.context.new_page(), chat_server.url)
    expect(other.locator("#connection")).to_have_attribute("data-state", "open")

    page.get_by_role("link", name="Sign out").click()
    page.get_by_role("button", name="Sign out").click()
    # The other tab's socket is closed by the server; it reconnects as what it now is: nobody.
    expect(other.locator("#connection")).to_have_attribute("data-state", "expired")
