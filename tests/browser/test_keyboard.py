"""Every action on the page done with keys alone: focus visible, never hidden, and landing somewhere sensible."""

import re

import pytest
from playwright.sync_api import expect

from billing.models import UsageRecord
from chat.models import Conversation
from tests.browser.conftest import (
    FAST, FAULT, SLOW, TIMEOUT_MS, assert_clean, open_chat, wait_for_reply, watched,
)

pytestmark = pytest.mark.browser

FOCUS = """() => {
  const node = document.activeElement;
  if (!node || node === document.body) return null;
  const box = node.getBoundingClientRect();
  const x = box.left + box.width / 2, y = box.top + box.height / 2;
  const top = document.elementFromPoint(x, y);
  return {
    id: node.id, tag: node.tagName.toLowerCase(), text: (node.getAttribute("aria-label") || node.textContent).trim(),
    classes: node.className, visible: node.matches(":focus-visible"),
    inView: box.width > 0 && box.height > 0 && x >= 0 && y >= 0 && x <= innerWidth && y <= innerHeight,
    onTop: top !== null && (top === node || node.contains(top) || top.contains(node)),
  };
}"""


def focused(page):
    """Return what has focus, checked to show a focus ring and not to be hidden under anything."""
    focus = page.evaluate(FOCUS)
    assert focus is not None, "focus fell to <body>"
    assert focus["visible"], f"no visible focus on {focus}"
    assert focus["inView"] and focus["onTop"], f"focus is obscured or off screen: {focus}"
    return focus


def tab_to(page, matches, shift=False, limit=60):
    """Press Tab (or Shift+Tab) until `matches(focus)`; return that focus."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if shift else "Tab")
        focus = page.evaluate(FOCUS)
        if focus and matches(focus):
            return focused(page)
    raise AssertionError(f"Tab never reached the element; focus is on {page.evaluate(FOCUS)}")


def type_and_send(page, text):
    assert focused(page)["id"] == "prompt"
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def test_it_sends_stops_and_retries_with_keys_alone(page, mock):
    assert focused(page)["id"] == "prompt"  # where the page puts focus when it loads
    # Back to the top of the page: the skip link comes first, and leads to the message box.
    tab_to(page, lambda f: f["text"] == "Skip to the message box", shift=True)
    page.keyboard.press("Enter")
    type_and_send(page, "hello by keyboard")
    wait_for_reply(page)
    assert focused(page)["id"] == "prompt"

    # Streaming off, then on again, from the checkbox.
    tab_to(page, lambda f: f["id"] == "stream")
    page.keyboard.press("Space")
    expect(page.locator("#stream")).not_to_be_checked()
    page.keyboard.press("Space")
    expect(page.locator("#stream")).to_be_checked()

    # Another model, picked with the arrow keys.
    tab_to(page, lambda f: f["id"] == "model", shift=True)
    while page.locator("#model").input_value() != SLOW:
        page.keyboard.press("ArrowDown")
    tab_to(page, lambda f: f["id"] == "prompt", shift=True)
    type_and_send(page, "a long one")
    page.wait_for_selector(".message.assistant[aria-busy='true'] .content:not(:empty)")
    stop = tab_to(page, lambda f: f["id"] == "stop")
    assert "Stop" in stop["text"]
    page.keyboard.press("Enter")
    wait_for_reply(page, "stopped")
    assert focused(page)["id"] == "prompt"
    assert UsageRecord.objects.filter(model=SLOW, status="stopped").exists()

    # Retry the stopped message: from the composer back into the transcript.
    tab_to(page, lambda f: f["text"].startswith("Retry"), shift=True)
    page.keyboard.press("Enter")
    assert focused(page)["id"] == "prompt"
    expect(page.locator(".message.assistant")).to_have_count(3)
    page.keyboard.press("Escape")  # Escape in the message box stops the reply
    wait_for_reply(page, "stopped")
    assert focused(page)["id"] == "prompt"


def test_it_keeps_focus_on_the_page_when_a_reply_ends_under_the_stop_button(page):
    # A reply of eight seconds: Tab reaches the stop button while it streams, however loaded the
    # machine (the default model's ends in a fraction of a second, sometimes before Tab got there).
    page.select_option("#model", SLOW)
    page.focus("#prompt")
    page.keyboard.type("quick")
    page.keyboard.press("Enter")
    tab_to(page, lambda f: f["id"] == "stop")
    wait_for_reply(page)
    assert focused(page)["id"] == "prompt"


def test_it_retries_a_failed_reply_with_keys(page):
    page.select_option("#model", FAULT)
    page.focus("#prompt")
    page.keyboard.type("this fails")
    page.keyboard.press("Enter")
    wait_for_reply(page, "failed")
    page.select_option("#model", FAST)
    page.focus("#prompt")
    tab_to(page, lambda f: f["text"].startswith("Retry"), shift=True)
    page.keyboard.press("Enter")
    assert focused(page)["id"] == "prompt"
    expect(page.locator(".message.assistant")).to_have_count(2)


def test_it_opens_renames_and_deletes_conversations_with_keys(page, chat_server):
    for text in ("first by keys", "second by keys"):
        page.keyboard.type(text)
        page.keyboard.press("Enter")
        wait_for_reply(page)
        if text.startswith("first"):
            tab_to(page, lambda f: f["text"] == "+ New chat", shift=True)
            page.keyboard.press("Enter")
            page.wait_for_url(chat_server.url + "/")
            page.wait_for_selector('#connection[data-state="open"]')
            assert focused(page)["id"] == "prompt"
    first = Conversation.objects.get(title="first by keys")

    # Open the first conversation from the list.
    tab_to(page, lambda f: f["text"] == "first by keys", shift=True)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/c/{first.pk}/$"))
    page.wait_for_selector('#connection[data-state="open"]')
    assert focused(page)["id"] == "prompt"

    # Rename: Escape cancels (once, without an error), Enter saves; focus returns to the button.
    tab_to(page, lambda f: f["text"] == "Rename “first by keys”", shift=True)
    page.keyboard.press("Enter")
    assert focused(page)["text"] == "New title"
    page.keyboard.press("Escape")
    assert focused(page)["text"] == "Rename “first by keys”"
    page.keyboard.press("Enter")
    page.keyboard.type("renamed by keys")
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="renamed by keys")).to_be_visible()
    assert focused(page)["text"] == "Rename “renamed by keys”"
    first.refresh_from_db()
    assert first.title == "renamed by keys"

    # Delete: the first press asks, the second deletes; focus moves to a neighbour in the list.
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Delete “renamed by keys”"
    page.keyboard.press("Enter")
    assert focused(page)["text"] == "Press again to delete"
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="renamed by keys")).to_have_count(0)
    assert focused(page)["tag"] == "a"
    assert not Conversation.objects.filter(pk=first.pk).exists()


def test_it_opens_and_closes_the_phone_drawer_with_keys(browser, chat_server, orm):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = open_chat(watched(context.new_page()), chat_server.url)
        page.keyboard.type("hello from a phone")
        page.keyboard.press("Enter")
        wait_for_reply(page)
        menu = tab_to(page, lambda f: f["id"] == "menu-button", shift=True)
        for close_key in ("Escape", "Close button"):
            page.keyboard.press("Enter")
            expect(page.locator("#menu-button")).to_have_attribute("aria-expanded", "true")
            # Focus moves into the drawer at once (it slides in with it), never stays on ☰ under it.
            assert page.evaluate("() => document.getElementById('sidebar').contains(document.activeElement)")
            page.wait_for_function("() => document.activeElement.getBoundingClientRect().left >= 0")
            inside = focused(page)
            # Tab walks the drawer and wraps around; nothing behind it takes focus.
            seen = [inside]
            for _ in range(12):
                page.keyboard.press("Tab")
                seen.append(focused(page))
                assert page.evaluate("() => document.getElementById('sidebar').contains(document.activeElement)"), seen
            assert {f["text"] for f in seen} >= {"Close", "+ New chat", "hello from a phone"}
            if close_key == "Escape":
                page.keyboard.press("Escape")
            else:
                tab_to(page, lambda f: f["text"] == "Close")
                page.keyboard.press("Enter")
            expect(page.locator("#menu-button")).to_have_attribute("aria-expanded", "false")
            page.wait_for_function("() => getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'")
            assert focused(page)["id"] == menu["id"]  # back on ☰, uncovered once the drawer slid out
        assert_clean(page)
    finally:
        context.close()
