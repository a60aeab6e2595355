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


async def arender(text):
    """See render(); in a worker thread of its own.

    A long reply takes milliseconds to render: neither the event loop (every socket's deltas) nor
    the one database thread (every socket's records) should wait for it.
    """
    return await asyncio.to_thread(render, text)
