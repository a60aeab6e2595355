// Markdown rendered in the page while a reply streams, the way the server renders it when it ends.
//
// The same parser (markdown-it 14.1.0, which the server's markdown-it-py ports) with the same options
// and rule as chat/markdown.py, cleaned by DOMPurify with the server's allow-list (nh3's). The
// server's HTML in `done` stays the source of truth; this only shows the reply as it grows.
// Code blocks whose fence names a language are highlighted in the page (highlight.js), the same way
// while streaming and on the server's HTML, so that neither the server nor the swap changes them.

import "../vendor/markdown-it-14.1.0/markdown-it.min.js";
import "../vendor/dompurify-3.5.0/purify.min.js";
import hljs from "../vendor/highlight.js-11.12.0/highlight.min.js";

const { markdownit, DOMPurify } = globalThis;

const md = markdownit("commonmark", { html: false, linkify: false, typographer: false }).enable("table");

// Table cells' `style="text-align:…"` become `class="align-…"` (the page's CSP allows no inline style).
md.core.ruler.push("align_classes", (state) => {
  for (const token of state.tokens) {
    const style = (token.type === "th_open" || token.type === "td_open") && token.attrGet("style");
    if (style) {
      token.attrSet("class", `align-${style.replace("text-align:", "")}`);
      token.attrs = token.attrs.filter(([name]) => name !== "style");
    }
  }
});

const CLEAN = {
  ALLOWED_TAGS: ["p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h1", "h2",
    "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "del"],
  ALLOWED_ATTR: ["href", "title", "class", "start"],
  // http, https, mailto and relative links, as the server allows (DOMPurify's default, fewer schemes)
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) node.setAttribute("rel", "noopener noreferrer nofollow");
});

// Return `text` rendered from Markdown as a sanitised DocumentFragment.
export function render(text) {
  return DOMPurify.sanitize(md.render(text), CLEAN);
}

// Return `text`'s top-level blocks, each {key, render()}: `key` is the block's source, and render()
// returns the block as a sanitised DocumentFragment. Joined, the blocks are render(text); a reply
// that grows re-renders only the blocks whose source changed (usually the last).
export function blocks(text) {
  const env = {};
  const tokens = md.parse(text, env);
  const lines = text.split("\n");
  const found = [];
  let start = null;
  for (let i = 0; i < tokens.length; i += 1) {
    const token = tokens[i];
    if (token.level !== 0) continue;
    if (token.nesting !== -1) start = i; // a block opens (or is whole: a fence, a rule)
    if (token.nesting === 1) continue;
    const opening = tokens[start];
    const part = tokens.slice(start, i + 1);
    const [from, to] = opening.map || [0, 0];
    found.push({
      key: `${opening.type}:${lines.slice(from, to).join("\n")}`,
      render: () => DOMPurify.sanitize(md.renderer.render(part, md.options, env), CLEAN),
    });
  }
  return found;
}

// Return the server's sanitised HTML (`done.html`, chat.markdown) as a DocumentFragment.
export function parseTrusted(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return template.content;
}

// highlight.js's output: the code's text in spans with classes (checked all the same, as any HTML).
const SPANS = { ALLOWED_TAGS: ["span"], ALLOWED_ATTR: ["class"], RETURN_DOM_FRAGMENT: true };

// Highlight the <code> of a fenced block if its fence names a language highlight.js knows (the
// `language-NAME` class both renderers give it); other code stays plain: no guessing, which would be
// slow and would change its mind as the block grows. Highlights the element's text, never its HTML.
export function highlight(code) {
  const name = [...code.classList].find((cls) => cls.startsWith("language-"))?.slice("language-".length);
  if (!name || !hljs.getLanguage(name)) return;
  const { value } = hljs.highlight(code.textContent, { language: name, ignoreIllegals: true });
  code.replaceChildren(DOMPurify.sanitize(value, SPANS));
}
