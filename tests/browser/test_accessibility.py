"""axe-core on each state of the page and the admin, and the Content-Security-Policy they run under.

Each test fails on any serious or critical axe violation; an exception is named where it is made,
with its reason. Every browser test (the `page` fixture) also fails on a CSP violation.
"""

import re

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import expect

from chatsite.csp import POLICY
from tests.browser.axe import assert_accessible, violations
from tests.browser.conftest import (
    FAULT, MARKDOWN, SLOW, TIMEOUT_MS, assert_clean, open_chat, send, wait_for_reply, watched,
)

pytestmark = pytest.mark.browser


def test_it_serves_the_page_with_a_strict_content_security_policy(page, chat_server):
    response = page.request.get(chat_server.url + "/")
    assert response.headers["content-security-policy"] == POLICY
    for directive in ("script-src 'self'", "style-src 'self'", "object-src 'none'", "frame-ancestors 'none'"):
        assert directive in POLICY
    assert "unsafe-inline" not in POLICY and "unsafe-eval" not in POLICY
    # The policy is enforced: an inline script the page did not ship is refused, and reported.
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = 1";
                            document.body.append(s); }""")
    assert page.evaluate("() => window.ran") is None
    expect(page.locator("body")).to_be_visible()
    assert page.csp_violations, "the refused inline script was not reported"
    page.csp_violations.clear()


def test_it_has_no_serious_violations_on_the_empty_page(page):
    assert_accessible(page, "the empty page")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_it_has_no_serious_violations_on_a_finished_reply_with_code_and_a_table(page, scheme):
    page.emulate_media(color_scheme=scheme)  # each has its highlighting theme (a11y-light, a11y-dark)
    send(page, "Show me some markdown", MARKDOWN)
    reply = wait_for_reply(page)
    expect(reply.locator(".markdown table")).to_have_count(1)
    expect(reply.locator(".markdown pre")).to_have_count(1)
    expect(reply.locator(".markdown pre .hljs-string")).to_have_count(1)  # axe sees the highlighting's colours
    assert_accessible(page, f"a finished reply with code and a table ({scheme})")


def test_it_has_no_serious_violations_while_a_reply_streams(page):
    send(page, "Tell me a long story", SLOW)
    page.wait_for_selector(".message.assistant[aria-busy='true'] .content:not(:empty)")
    assert_accessible(page, "a reply while it streams")
    page.get_by_role("button", name="Stop").click()
    wait_for_reply(page, "stopped")


def test_it_has_no_serious_violations_on_an_error_with_retry(page):
    send(page, "This will fail", FAULT)
    reply = wait_for_reply(page, "failed")
    expect(reply.get_by_role("button", name="Retry")).to_be_visible()
    assert_accessible(page, "an error with Retry")


def test_it_has_no_serious_violations_on_a_phone_with_the_drawer_open_or_closed(browser, chat_server, orm):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = open_chat(watched(context.new_page()), chat_server.url)
        send(page, "Show me some markdown", MARKDOWN)
        wait_for_reply(page)
        code = page.locator(".message.assistant pre")
        assert code.evaluate("(pre) => pre.scrollWidth > pre.clientWidth"), "the code block does not scroll here"
        assert_accessible(page, "the phone viewport, drawer closed")
        # The auditor catches what it is here for: without its tabindex the scrolling block fails.
        code.evaluate("(pre) => pre.removeAttribute('tabindex')")
        assert "scrollable-region-focusable" in {v["id"] for v in violations(page)}
        code.evaluate("(pre) => pre.setAttribute('tabindex', '0')")
        page.get_by_role("button", name="Conversations").click()
        expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
        assert_accessible(page, "the phone viewport, drawer open")
        assert_clean(page)
    finally:
        context.close()


@pytest.fixture
def operator(orm):
    """Return (username, password) of a superuser the live server accepts."""
    from django.contrib.auth.models import User

    password = "a-long-operator-password"
    # Hashed for the live server's hashers (this process uses the tests' fast MD5 one).
    encoded = PBKDF2PasswordHasher().encode(password, "operatorsalt", iterations=1000)
    User.objects.update_or_create(
        username="operator", defaults={"password": encoded, "is_staff": True, "is_superuser": True},
    )
    return "operator", password


def test_it_has_no_serious_violations_in_the_admin_usage_list_and_dashboard(context, chat_server, operator):
    page = watched(context.new_page())
    page.goto(chat_server.url + "/admin/billing/usagerecord/")
    assert_accessible(page, "the admin login page")
    page.get_by_label("Username").fill(operator[0])
    page.get_by_label("Password").fill(operator[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#changelist")).to_be_visible()
    assert page.request.get(page.url).headers["content-security-policy"] == POLICY
    assert_accessible(page, "the admin's usage list")
    page.locator("div.breadcrumbs a").first.click()
    assert_accessible(page, "the admin's index")
    page.goto(chat_server.url + "/admin/billing/dashboard/")
    expect(page.locator("svg.chart").first).to_be_visible()
    assert page.locator("svg.chart").first.bounding_box()["width"] > 300, "the dashboard's charts lost their styles"
    assert_accessible(page, "the admin's billing dashboard")
    assert_clean(page)


def test_it_has_no_serious_violations_on_the_login_page(context, chat_server):
    # (The signup page is closed on the live server: CHAT_ALLOW_SIGNUP is off by default.)
    page = watched(context.new_page())
    page.goto(chat_server.url + "/login/")
    assert page.request.get(page.url).headers["content-security-policy"] == POLICY
    assert_accessible(page, "the login page")
    page.get_by_label("Username").fill("nobody")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("form")).to_contain_text(re.compile("correct|invalid|enter", re.I))
    assert_accessible(page, "the login page with an error")
    assert_clean(page)
