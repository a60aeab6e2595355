"""The chat page in a real browser, against a live daphne server and the mock upstream."""

import os
import re
import time

import pytest
from playwright.sync_api import expect

from billing.models import AbandonmentEvent, UsageRecord
from chat.models import Conversation, Message
from tests.browser.conftest import (
    FAST, FAULT, MARKDOWN, ROOT, SLOW, TIMEOUT_MS, XSS, last_reply, open_chat, send, wait_for_reply,
)
from tests.processes import wait_for

pytestmark = pytest.mark.browser


LAST = "[...document.querySelectorAll('.message.assistant')].pop()"  # the newest reply, in page JS


def reply_text(tab):
    return tab.evaluate(f"() => {LAST}?.querySelector('.content').textContent ?? ''")


def reply_length(tab):
    return tab.evaluate(f"() => {LAST}?.querySelector('.content').textContent.length ?? 0")


def wait_for_text(tab, length):
    """Wait until the newest reply shows more than `length` characters."""
    tab.wait_for_function(f"() => ({LAST}?.querySelector('.content').textContent.length ?? 0) > {length}")


def streaming(tab):
    return tab.locator(".message.assistant .caret").count() == 1


def record_of(message_id, status=None):
    """Wait for the usage record of reply `message_id` (with `status`, if given) and return it."""
    def read():
        records = UsageRecord.objects.filter(message_id=message_id)
        if status:
            records = records.filter(status=status)
        return records.first()
    return wait_for(read, what=f"a {status or ''} usage record for message {message_id}")


def reply_id(tab):
    tab.wait_for_function(f"() => {LAST}?.dataset.id")
    return int(last_reply(tab).get_attribute("data-id"))


def test_it_streams_a_reply_progressively_and_renders_markdown(page):
    send(page, "Show me some markdown", MARKDOWN)
    wait_for_text(page, 0)
    first = reply_length(page)
    assert streaming(page), "the reply ended before it could be seen growing"
    page.wait_for_timeout(500)
    second = reply_length(page)
    assert streaming(page), "the reply ended too soon to be seen growing"
    assert 0 < first < second, (first, second)
    # While streaming the Markdown is rendered already (tests/browser/test_markdown_stream.py).
    expect(page.locator(".message.assistant h1")).to_have_text("A heading")
    reply = wait_for_reply(page)
    expect(reply.locator(".markdown h1")).to_have_text("A heading")
    expect(reply.locator(".markdown pre code")).to_contain_text("def greet(name):")
    expect(reply.locator(".markdown li")).to_have_count(3)
    expect(reply.get_by_role("button", name="Copy code")).to_have_count(1)
    expect(reply.locator(".caret")).to_have_count(0)
    expect(reply.locator(".figures")).to_contain_text("First token")
    message = Message.objects.get(pk=reply_id(page))
    assert message.status == "completed" and message.content.startswith("# A heading")
    assert record_of(message.pk).status == "completed"


def test_it_shows_each_replys_figures_with_its_tiny_cost(page):
    send(page, "hello", FAST)
    reply = wait_for_reply(page)
    record = record_of(reply_id(page))
    assert record.cost_usd is not None and record.cost_usd < 1
    shown = f"${record.cost_usd.normalize():f}"
    figures = reply.locator(".figures")
    expect(figures.locator("div", has=page.locator("dt", has_text="Cost")).locator("dd")).to_have_text(shown)
    expect(figures).to_contain_text(f"{record.prompt_tokens} in · {record.completion_tokens} out")
    expect(figures).to_contain_text(f"{record.ttft_ms} ms")
    expect(figures).to_contain_text("tok/s")


def test_it_stops_the_reply_at_once(page, mock):
    send(page, "Tell me a long story", SLOW)
    wait_for_text(page, 30)
    message_id = reply_id(page)
    clicked = time.monotonic()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".message.assistant .caret")).to_have_count(0)
    frozen = reply_text(page)
    page.wait_for_timeout(700)
    assert reply_text(page) == frozen
    reply = wait_for_reply(page, "stopped")
    # The stored reply, rendered by the server, is what the screen showed at the stop: not a word more.
    assert reply_text(page) == frozen
    assert Message.objects.get(pk=message_id).content.strip() == frozen.strip()
    assert time.monotonic() - clicked < 5, "the stop was not answered promptly"
    expect(reply.locator(".mark")).to_contain_text("Stopped")
    expect(reply.get_by_role("button", name="Retry")).to_be_visible()
    record = record_of(message_id, "stopped")
    assert record.completion_tokens < 160
    assert AbandonmentEvent.objects.get(record=record).reason == "stop"
    assert mock.wait_idle(10)
    assert mock.stats(log=False)["closed_early"] == 1
    # The page keeps working after a stop.
    send(page, "hello again", FAST)
    wait_for_reply(page)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_it_never_runs_markup_from_the_model(page, stream):
    send(page, "Say something dangerous", XSS, stream=stream)
    reply = wait_for_reply(page)
    for tab in (page, open_chat(page, page.url)):
        transcript = tab.locator("#transcript")
        expect(transcript.locator(".message.assistant")).to_have_count(1)
        assert transcript.locator("img").count() == 0
        assert transcript.locator("script").count() == 0
        assert transcript.locator("[onerror]").count() == 0
        expect(tab.locator(".message.assistant .content")).to_contain_text("<img src=x onerror=alert(1)>")
        expect(tab.locator(".message.assistant .content")).to_contain_text("<script>alert(1)</script>")
        expect(tab.locator(".message.assistant .content strong")).to_have_text("bold")
    page.wait_for_timeout(300)
    assert page.dialogs == []
    assert reply is not None


def test_it_shows_the_stored_conversation_in_a_second_tab_and_after_a_reload(page, context):
    send(page, "Remember the river stone", FAST)
    wait_for_reply(page)
    expect(page).to_have_url(re.compile(r"/c/\d+/$"))
    conversation = Conversation.objects.get(title="Remember the river stone")
    reply_text = page.locator(".message.assistant .content").inner_text()
    other = context.new_page()
    open_chat(other, page.url.split("/c/")[0] + "/")
    expect(other.locator("#conversations")).to_contain_text("Remember the river stone")
    other.get_by_role("link", name="Remember the river stone").click()
    for tab in (other, open_chat(page, page.url)):
        expect(tab).to_have_url(re.compile(rf"/c/{conversation.pk}/$"))
        expect(tab.locator(".message.user .content")).to_have_text("Remember the river stone")
        expect(tab.locator(".message.assistant .content")).to_have_text(reply_text)
        expect(tab.locator(".message.assistant .figures")).to_contain_text("Cost")
    # The second tab continues the same conversation.
    send(other, "And again", FAST)
    wait_for_reply(other)
    assert conversation.messages.count() == 4


def test_it_shows_an_upstream_error_and_keeps_working(page):
    send(page, "This will fail", FAULT)
    reply = wait_for_reply(page, "failed")
    alert = reply.get_by_role("alert")
    expect(alert).to_contain_text("Failed")
    expect(reply.get_by_role("button", name="Retry")).to_be_visible()
    record = record_of(reply_id(page), "failed")
    assert record.error
    send(page, "hello", FAST)
    wait_for_reply(page)
    expect(page.locator(".message.assistant")).to_have_count(2)


def test_it_sends_on_enter_and_breaks_lines_on_shift_enter(page):
    page.select_option("#model", FAST)
    prompt = page.get_by_label("Message", exact=True)
    prompt.click()
    prompt.type("line one")
    prompt.press("Shift+Enter")
    prompt.type("line two")
    expect(prompt).to_have_value("line one\nline two")
    expect(page.locator(".message.user")).to_have_count(0)
    prompt.press("Enter")
    expect(page.locator(".message.user .content")).to_have_text("line one\nline two")
    expect(prompt).to_have_value("")
    wait_for_reply(page)
    message = Message.objects.filter(role="user").get(content="line one\nline two")
    assert message.conversation.title == "line one line two"


def test_it_fits_a_phone_screen(browser, chat_server, orm):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = open_chat(context.new_page(), chat_server.url)
        send(page, "Show me some markdown", MARKDOWN)
        wait_for_reply(page)
        send(page, "x" * 300, FAST)
        wait_for_reply(page)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
        assert page.evaluate("() => document.body.scrollWidth") <= 390
        sidebar = page.get_by_role("navigation", name="Conversations")
        expect(sidebar).to_be_hidden()
        menu = page.get_by_role("button", name="Conversations")
        expect(menu).to_have_attribute("aria-expanded", "false")
        menu.click()
        expect(sidebar).to_be_visible()
        expect(menu).to_have_attribute("aria-expanded", "true")
        expect(sidebar.get_by_role("link", name="Show me some markdown")).to_be_visible()
    finally:
        context.close()


def test_it_takes_the_screenshot_mid_conversation(page, tmp_path):
    """Take README's screenshot (kept in docs/ only with UPDATE_SCREENSHOT=1, so runs leave the tree clean)."""
    send(page, "Show me some markdown", MARKDOWN)
    wait_for_reply(page)
    send(page, "Now tell me a long story", SLOW)
    wait_for_text(page, 120)
    path = ROOT / "docs" / "screenshot.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "screenshot.png"
    page.screenshot(path=str(path), animations="disabled")
    assert path.stat().st_size > 10_000
    page.get_by_role("button", name="Stop").click()
    wait_for_reply(page, "stopped")


def test_it_sends_a_message_typed_while_disconnected_once_reconnected(page, chat_server):
    send(page, "Before the outage", FAST)
    wait_for_reply(page)
    conversation = Conversation.objects.get(title="Before the outage")
    chat_server.stop()
    try:
        expect(page.locator("#connection")).not_to_have_attribute("data-state", "open")
        send(page, "Typed while offline", FAST)
        waiting = page.locator(".message.user").last
        expect(waiting.locator(".note")).to_contain_text("Not sent yet")
    finally:
        chat_server.start()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    wait_for_reply(page)
    expect(waiting.locator(".note")).to_have_count(0)
    assert list(conversation.messages.filter(role="user").values_list("content", flat=True)) == [
        "Before the outage", "Typed while offline",
    ]
    assert conversation.messages.filter(role="assistant", status="completed").count() == 2
