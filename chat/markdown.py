"""Render a model's Markdown reply to HTML that is safe to put in the page."""

import asyncio

import nh3
from markdown_it import MarkdownIt

# Raw HTML in the reply is escaped by the renderer, and nh3 cleans what it produced as well.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def _align_classes(state):
    """Turn table cells' `style="text-align:…"` into `class="align-…"` (the page's CSP allows no inline style)."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open") and token.attrGet("style"):
            token.attrSet("class", "align-" + token.attrGet("style").removeprefix("text-align:"))
            del token.attrs["style"]


# static/chat/markdown.js applies the same rule to the Markdown it renders while a reply streams.
_md.core.ruler.push("align_classes", _align_classes)
_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h1", "h2",
    "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "del",
}
_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"class"}, "td": {"class"}, "ol": {"start"}}


def render(text):
    """Return the reply rendered from Markdown to sanitised HTML."""
    return nh3.clean(
        _md.render(text),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


# Up to this many characters a reply is rendered where it is asked for, longer ones in a worker
# thread. Measured on this project's 2-core machine: one word 57 µs, 500 characters of plain prose
# 70 µs, of dense Markdown (emphasis, code, a list item per line) 750 µs; the thread hand-off alone
# costs ~115 µs of CPU, more than rendering most short replies, and frees the event loop of nothing
# while markdown-it runs (pure Python: the worker holds the GIL, and the loop gets it back only at
# the interpreter's switch interval).
INLINE_CHARS = 500


async def arender(text):
    """See render(); a reply longer than INLINE_CHARS in a worker thread of its own.

    A long reply takes milliseconds to render: neither the event loop (every socket's deltas) nor
    the one database thread (every socket's records) should wait for it in one piece; the thread
    lets the interpreter hand the loop the GIL between its switch intervals.
    """
    if len(text) <= INLINE_CHARS:
        return render(text)
    return await asyncio.to_thread(render, text)
