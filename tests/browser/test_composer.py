"""The small things people notice: waiting, speed, remembered choices, the size limit, an empty Enter, deleting."""

import re

import pytest
from playwright.sync_api import expect

from billing.models import UsageRecord
from chat.models import Conversation
from tests.browser.conftest import FAST, PONDERING, SLOW, open_chat, send, wait_for_reply

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_it_shows_a_typing_indicator_until_the_first_text(page, stream):
    send(page, "take your time", PONDERING, stream=stream)
    reply = page.locator(".message.assistant").last
    expect(reply.locator(".typing")).to_be_visible()
    expect(reply.locator(".typing")).to_contain_text("The assistant is writing…")
    assert reply.locator(".content").inner_text() == ""
    wait_for_reply(page)
    expect(reply.locator(".typing")).to_have_count(0)
    expect(reply.locator(".content")).not_to_be_empty()
    figures = reply.locator(".figures")
    expect(figures).to_contain_text("First token")
    # A reply that arrives whole has no speed to speak of; a streamed one does.
    expect(figures.locator("dt", has_text="Speed")).to_have_count(1 if stream else 0)


def test_it_remembers_the_model_and_the_stream_toggle(page, chat_server):
    page.select_option("#model", SLOW)
    page.locator("#stream").set_checked(False)
    page.reload()
    expect(page.locator("#model")).to_have_value(SLOW)
    expect(page.locator("#stream")).not_to_be_checked()
    # A saved conversation opens with its own model, whatever was picked last.
    send(page, "on the fast one", FAST, stream=False)
    wait_for_reply(page)
    page.select_option("#model", SLOW)
    open_chat(page, page.url)
    expect(page.locator("#model")).to_have_value(FAST)
    expect(page.locator("#stream")).not_to_be_checked()


def test_it_refuses_an_over_limit_message_before_it_enters_the_transcript(page, chat_server, mock):
    prompt = page.get_by_label("Message", exact=True)
    counter = page.locator("#prompt-count")
    prompt.fill("x" * 1000)
    expect(counter).to_be_hidden()  # far from the limit, nothing to say
    prompt.fill("x" * 32_001)
    expect(counter).to_be_visible()
    expect(counter).to_have_text("32,001 / 32,000 characters")
    expect(counter).to_have_class(re.compile(r"\bover\b"))
    prompt.press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Too long to send: 32,001 characters; the limit is 32,000.")
    expect(page.locator(".message")).to_have_count(0)
    expect(prompt).to_have_value("x" * 32_001)  # nothing the person typed is lost
    prompt.press("Backspace")
    expect(alert).to_be_hidden()
    expect(counter).not_to_have_class(re.compile(r"\bover\b"))
    assert mock.stats(log=False)["requests"] == 0


def test_it_does_nothing_on_enter_in_an_empty_box(page, mock):
    prompt = page.get_by_label("Message", exact=True)
    for text in ("", "   \n  "):
        prompt.fill(text)
        prompt.press("Enter")
    expect(page.locator(".message")).to_have_count(0)
    assert page.evaluate("() => document.querySelector('#prompt:invalid') === null")
    expect(prompt).to_be_focused()
    assert mock.stats(log=False)["requests"] == 0


def test_it_says_when_a_conversation_is_deleted_even_while_it_streams(page):
    send(page, "one to delete", FAST)
    wait_for_reply(page)
    item = page.locator("#conversations li").first
    item.get_by_role("button", name="Delete “one to delete”").click()
    item.get_by_role("button", name="Press again to delete").click()
    toast = page.get_by_role("status").filter(has_text="Deleted")
    expect(toast).to_have_text("Deleted “one to delete”. Started a new chat.")
    expect(toast).to_be_visible()
    expect(page.locator(".message")).to_have_count(0)
    assert not Conversation.objects.filter(title="one to delete").exists()

    send(page, "a long one to delete", SLOW)
    page.wait_for_selector(".message.assistant[aria-busy='true'] .content:not(:empty)")
    item = page.locator("#conversations li").first
    item.get_by_role("button", name="Delete “a long one to delete”").click()
    item.get_by_role("button", name="Press again to stop the reply and delete").click()
    expect(toast).to_have_text("Deleted “a long one to delete”. Started a new chat.")
    expect(page.locator(".message")).to_have_count(0)
    assert not Conversation.objects.filter(title="a long one to delete").exists()
    record = UsageRecord.objects.filter(model=SLOW, conversation__isnull=True).latest("started")
    assert record.status == "stopped"  # stopped first, so its record was written, then deleted
