"""A reply's Markdown rendered while it streams: safe, the same as the server's at the end, with no jump."""

import pytest
from playwright.sync_api import expect

from chat import markdown
from chat.mock_upstream.plan import CANNED
from tests.browser.conftest import HOSTILE, MARKDOWN, XSS_STREAMED, last_reply, send, wait_for_reply

pytestmark = pytest.mark.browser

LIVE = ".message.assistant[aria-busy='true']"  # the reply still streaming

# Markdown the page and the server must render alike (and the canned replies).
SAMPLES = [
    *CANNED.values(),
    "## Two\n\n### Three\n\n#### Four\n\n1. one\n2. two\n\n3) three\n\n> quoted *text* and **bold**\n\n---\n\nend",
    "A hard  \nbreak, `code`, ~~struck~~, [rel](/c/1/ \"a title\"), <mailto:a@example.com>, &amp; &copy; &#x27;",
    "- loose\n\n- list\n  - nested\n\n5. starts\n6. at five\n\n    indented code\n\n| a | b | c |\n|:-|:-:|-:|\n| 1 | 2 | 3 |",
    "```\nan unclosed fence\n",
    "* [ ] not a task list\n\nText with a trailing backslash\\",
]

SAME_AS_SERVER = """async ([text, html]) => {
  const { render, parseTrusted } = await import("/static/chat/markdown.js");
  const wrap = (fragment) => { const div = document.createElement("div"); div.append(fragment); return div; };
  const mine = wrap(render(text)), theirs = wrap(parseTrusted(html));
  return mine.isEqualNode(theirs) ? null : [mine.innerHTML, theirs.innerHTML];
}"""


def test_it_renders_markdown_as_the_server_does(page):
    for text in SAMPLES:
        difference = page.evaluate(SAME_AS_SERVER, [text, markdown.render(text)])
        assert difference is None, f"the page and the server render {text!r} differently:\n{difference}"


BLOCKWISE = """async (texts) => {
  const { render, blocks } = await import("/static/chat/markdown.js");
  const html = (fragment) => { const div = document.createElement("div"); div.append(fragment); return div; };
  const differ = [];
  for (const text of texts) {
    const whole = html(render(text));
    const joined = document.createElement("div");
    for (const block of blocks(text)) joined.append(block.render());
    if (!joined.isEqualNode(whole)) differ.push([text, joined.innerHTML, whole.innerHTML]);
  }
  return differ;
}"""


def test_it_renders_a_growing_reply_block_by_block_as_it_would_whole(page):
    # Every prefix of each sample, as a streaming reply passes through them.
    prefixes = [text[:end] for text in SAMPLES for end in range(1, len(text) + 1, 3)]
    assert page.evaluate(BLOCKWISE, prefixes) == []


def test_it_renders_markdown_while_the_reply_streams_and_nothing_jumps_at_the_end(page):
    send(page, "Show me some markdown", MARKDOWN)
    # Each block is seen rendered while the reply is still streaming.
    page.wait_for_selector(f"{LIVE} .markdown h1")
    page.wait_for_selector(f"{LIVE} .markdown ul li")
    page.wait_for_selector(f"{LIVE} .markdown .code-block pre code")  # a fence still open is code already
    expect(page.locator(f"{LIVE} .markdown h1")).to_have_text("A heading")
    expect(page.locator(f"{LIVE} .caret")).to_have_count(1)
    expect(page.locator(f"{LIVE} .markdown")).not_to_contain_text("```")
    expect(page.locator(f"{LIVE} .markdown")).not_to_contain_text("# A heading")
    # Keep hold of the blocks shown so far, and where they are.
    before = page.evaluate("""() => {
      const content = document.querySelector(".message.assistant .markdown");
      window.shownBlocks = [...content.children].slice(0, 3);
      return window.shownBlocks.map((node) => node.getBoundingClientRect().top - content.getBoundingClientRect().top);
    }""")
    reply = wait_for_reply(page)
    after = page.evaluate("""() => {
      const content = document.querySelector(".message.assistant .markdown");
      return window.shownBlocks.map((node) => node.isConnected
        ? node.getBoundingClientRect().top - content.getBoundingClientRect().top : null);
    }""")
    assert after == before, "blocks shown while streaming were replaced or moved when the reply ended"
    expect(reply.locator(".markdown h1")).to_have_text("A heading")
    expect(reply.locator(".markdown li")).to_have_count(3)
    expect(reply.locator(".markdown pre code")).to_contain_text("def greet(name):")
    expect(reply.locator(".markdown td.align-right").first).to_have_text("1")
    expect(reply.get_by_role("button", name="Copy code")).to_have_count(1)
    expect(reply.locator(".caret, .typing")).to_have_count(0)


WATCH = """() => {
  window.hostile = [];
  const check = (node) => {
    if (node.nodeType !== 1) return;
    for (const el of [node, ...node.querySelectorAll("*")]) {
      if (["IMG", "SCRIPT", "IFRAME", "SVG", "svg", "OBJECT", "EMBED"].includes(el.tagName)) window.hostile.push(el.outerHTML);
      for (const attr of el.attributes) {
        if (attr.name.startsWith("on") || /^\\s*(javascript|data):/i.test(attr.value)) window.hostile.push(el.outerHTML);
      }
    }
  };
  new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(check)))
    .observe(document.getElementById("transcript"), { childList: true, subtree: true });
}"""


@pytest.mark.parametrize("model", [HOSTILE, XSS_STREAMED], ids=["hostile", "xss"])
def test_it_keeps_hostile_markdown_inert_while_it_streams(page, model):
    page.evaluate(WATCH)
    send(page, "Say something dangerous", model)
    page.wait_for_selector(f"{LIVE} .markdown p")
    renders = 0
    while page.locator(LIVE).count():  # look at it frame after frame while it streams
        renders += 1
        page.wait_for_timeout(30)
    reply = wait_for_reply(page)
    assert renders > 3, "the reply ended before it could be watched streaming"
    assert page.evaluate("() => window.hostile") == []
    assert page.dialogs == []
    links = reply.locator("a")
    for index in range(links.count()):
        assert links.nth(index).get_attribute("href").startswith(("https://", "http://", "/", "mailto:"))
    if model == HOSTILE:
        expect(reply.get_by_role("link", name="a fine link")).to_have_attribute("rel", "noopener noreferrer nofollow")
        expect(reply.locator(".markdown")).to_contain_text('<a href="javascript:alert(1)" onclick="alert(1)">')
    assert last_reply(page).get_attribute("data-status") == "completed"


def code_html(tab, selector):
    return tab.locator(selector).first.evaluate("(code) => code.innerHTML")


CODE = 'def greet(name):\n    return f"Hello, {name}!"  # a line too wide for a phone: it scrolls sideways\n'

# Note, after every change while the reply streams (nothing missed however fast it ends), whether its
# python block is highlighted, and how it looks (without the caret) once all its text has arrived.
WATCH_CODE = """(whole) => {
  window.liveHighlighted = false;
  window.streamedHtml = null;
  new MutationObserver(() => {
    const code = document.querySelector(".message.assistant[aria-busy='true'] .markdown pre code.language-python");
    if (!code) return;
    if (code.querySelector(".hljs-keyword")) window.liveHighlighted = true;
    const shown = code.cloneNode(true);
    shown.querySelectorAll(".caret").forEach((caret) => caret.remove());
    if (shown.textContent === whole) window.streamedHtml = shown.innerHTML;
  }).observe(document.getElementById("transcript"), { childList: true, subtree: true, characterData: true });
}"""


def test_it_highlights_a_fenced_python_block_while_it_streams_and_the_same_after_the_end(page):
    page.evaluate(WATCH_CODE, CODE)
    send(page, "Show me some markdown", MARKDOWN)
    reply = wait_for_reply(page)
    final = reply.locator(".markdown pre code")
    expect(final.locator(".hljs-keyword").first).to_have_text("def")
    expect(final.locator(".hljs-title.function_")).to_have_text("greet")
    expect(final.locator(".hljs-string")).to_contain_text('"Hello, {name}!"')
    expect(final.locator(".hljs-comment")).to_contain_text("# a line too wide")
    # The server's HTML took the place of the text, and the code looks as it did while streaming.
    assert page.evaluate("() => window.liveHighlighted"), "the code was not highlighted while it streamed"
    streamed = page.evaluate("() => window.streamedHtml")
    assert streamed and "hljs-keyword" in streamed, "the whole code block was never seen while streaming"
    assert final.evaluate("(code) => code.innerHTML") == streamed
    # Highlighting changes the look, not the text: the code copies as written.
    assert final.evaluate("(code) => code.textContent") == CODE
    # Reloaded, the transcript's code (the server's HTML) is highlighted the same.
    page.reload()
    assert code_html(page, ".message.assistant .markdown pre code") == streamed


HIGHLIGHT = """async (fences) => {
  const { render, highlight } = await import("/static/chat/markdown.js");
  return fences.map((text) => {
    const code = render(text).querySelector("code");
    const before = code.textContent;
    highlight(code);
    return [code.textContent === before, code.querySelectorAll("span").length,
      [...code.querySelectorAll("*")].filter((el) => el.tagName !== "SPAN" || [...el.attributes].some((a) => a.name !== "class")).length];
  });
}"""


def test_it_highlights_only_a_language_it_knows_and_only_the_text(page):
    fences = {
        "```python\nimport os\nx = 1\n```": True,
        "```py\nimport os\n```": True,  # highlight.js's alias
        "```html\n<img src=x onerror=alert(1)>\n```": True,
        "```js\nconst a = '</code><img src=x onerror=alert(1)>';\n```": True,
        "```\nimport os\nx = 1\n```": False,  # no language: no guessing
        "```nosuchlanguage\nimport os\n```": False,
        "    import os  # indented code\n": False,
    }
    results = page.evaluate(HIGHLIGHT, list(fences))
    for (text, highlighted), (same_text, spans, others) in zip(fences.items(), results, strict=True):
        assert same_text, f"highlighting changed the text of {text!r}"
        assert (spans > 0) == highlighted, f"{text!r}: {spans} highlight spans"
        assert others == 0, f"{text!r}: highlighting made elements other than spans with a class"
