// A reply in the page: its Markdown rendered as it streams, its code blocks, its figures.
//
// While streaming, the text is rendered on animation frames by static/chat/markdown.js (sanitised);
// at the end the server's HTML (`done.html`) replaces it block by block, and since both renderers
// agree, the blocks already shown stay as they are: nothing jumps.

import { blocks, highlight, parseTrusted } from "./markdown.js";

const COPIED_MS = 1500;
// A render may take at most 1/(1+RATIO) of the main thread: after one that took t ms, the next waits
// RATIO × t (a long reply on a slow phone renders less often rather than freezing the page).
const RENDER_RATIO = 3;

// Return a copy of the server-rendered <template id=`id`>'s element (templates/chat/index.html).
export function clone(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

async function copy(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}

function copyButton(pre) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "button small copy";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy code");
  button.addEventListener("click", async () => {
    try {
      await copy(pre.textContent);
      button.textContent = "Copied";
    } catch (err) {
      console.error("chat: copy failed", err);
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, COPIED_MS);
  });
  return button;
}

// Return a rendered top-level block ready for the page: code blocks get a Copy button and their
// highlighting, and what scrolls sideways (code, tables) takes focus so that keys can scroll it.
function decorate(node) {
  if (node.nodeType !== Node.ELEMENT_NODE) return node;
  node.querySelectorAll("table").forEach((table) => table.setAttribute("tabindex", "0"));
  if (node.tagName === "TABLE") node.setAttribute("tabindex", "0");
  if (node.tagName !== "PRE") return node;
  node.setAttribute("tabindex", "0");
  const code = node.querySelector(":scope > code");
  if (code) highlight(code);
  const wrapper = document.createElement("div");
  wrapper.className = "code-block";
  wrapper.append(copyButton(node), node);
  return wrapper;
}

// Decorate the blocks of a reply the server rendered into the page.
export function decorateCode(root) {
  for (const node of [...root.children]) {
    if (node.classList.contains("code-block")) continue;
    const next = node.nextSibling;
    root.insertBefore(decorate(node), next); // a code block's wrapper has taken it out of `root`
  }
}

const shownAs = new WeakMap(); // a block in the page -> {key, html} it was rendered from

function elements(fragment) {
  return [...fragment.children]; // the whitespace between blocks shows nothing
}

// Show `items` in `content` ({key or html, nodes()} each, compared on `field`), keeping the blocks
// already shown up to the first that changed: what is on screen stays put.
function update(content, items, field) {
  const shown = [...content.children];
  let same = 0;
  while (same < items.length && same < shown.length && shownAs.get(shown[same])?.[field] === items[same][field]) {
    same += 1;
  }
  for (const node of shown.slice(same)) node.remove();
  for (const item of items.slice(same)) {
    for (const node of item.nodes()) {
      const html = node.outerHTML;
      const placed = decorate(node);
      shownAs.set(placed, { key: item.key, html });
      content.append(placed);
    }
  }
}

// Show Markdown `text`, rendering only the blocks whose source changed.
function showMarkdown(content, text) {
  update(content, blocks(text).map((block) => ({ key: block.key, nodes: () => elements(block.render()) })), "key");
}

// Show the server's HTML; blocks the page rendered alike stay as they are.
function showServerHtml(content, html) {
  update(content, elements(parseTrusted(html)).map((node) => ({ html: node.outerHTML, nodes: () => [node] })), "html");
}

// Put the caret at the end of the text: in the deepest last block (a list item, a code block; not
// in a highlighted code's last span, which may come before the last of its text).
function placeCaret(content, caret) {
  let target = content;
  while (target.tagName !== "CODE" && target.lastElementChild && !["HR", "BR"].includes(target.lastElementChild.tagName)) {
    target = target.lastElementChild;
  }
  target.append(caret);
}

export class LiveReply {
  // `article` is a clone of the reply template; `onGrow` is called after each render.
  constructor(article, { onGrow }) {
    this.article = article;
    this.bubble = article.querySelector(".bubble");
    this.content = article.querySelector(".content");
    this.typing = article.querySelector(".typing");
    this.caret = document.createElement("span");
    this.caret.className = "caret";
    this.caret.setAttribute("aria-hidden", "true");
    this.onGrow = onGrow;
    this.text = "";
    this.pending = false;
    this.nextAt = 0;
    this.ended = false; // no more renders from the text, no caret: stopped, or ended
    this.ratio = RENDER_RATIO;
    this.renders = 0; // counted for bench/markdown_stream.py
    this.renderMs = 0;
  }

  // Add streamed text; it shows on the next animation frame.
  append(text) {
    this.text += text;
    if (this.pending || this.ended) return;
    this.pending = true;
    const frame = () => requestAnimationFrame(() => this.render());
    const wait = this.nextAt - performance.now();
    if (wait > 0) setTimeout(frame, wait);
    else frame();
  }

  render() {
    this.pending = false;
    if (this.ended) return;
    const started = performance.now();
    this.caret.remove();
    showMarkdown(this.content, this.text);
    if (this.text) this.typing?.remove();
    placeCaret(this.content, this.caret);
    const took = performance.now() - started;
    this.renders += 1;
    this.renderMs += took;
    this.nextAt = started + took * (1 + this.ratio);
    this.onGrow();
  }

  // Freeze the reply as it is on screen (the person pressed Stop): no caret, no typing, no more text.
  freeze() {
    if (!this.ended && this.text) this.render(); // what arrived before the stop, not yet drawn
    this.ended = true;
    this.caret.remove();
    this.typing?.remove();
  }

  // End the reply with the text that arrived, rendered here (no `done` came: the socket closed).
  end() {
    this.freeze();
    this.article.removeAttribute("aria-busy");
    this.content.classList.remove("streaming");
    if (!this.text && !this.content.hasChildNodes()) this.content.remove();
  }

  // End the reply with the server's `done`: its HTML, or a word on why there is none, and its figures.
  finish(done) {
    this.ended = true; // the server's HTML takes the place of the text: no last render of it here
    this.end();
    if (done.html) {
      if (!this.content.isConnected) this.bubble.prepend(this.content);
      showServerHtml(this.content, done.html); // rendered and sanitised by the server (chat.markdown)
    } else {
      this.content = this.bubble.querySelector(".content") || this.bubble.insertAdjacentElement("afterbegin", document.createElement("div"));
      this.content.className = "content empty";
      this.content.textContent = done.status === "failed" ? "No reply was received." : "No text was received.";
    }
    if (done.figures) this.bubble.append(figuresList(done.figures));
  }
}

// Return the figures line for `figures` (chat.figures): the template's rows, each filled or left out.
export function figuresList(figures) {
  const list = clone("figures-template");
  for (const row of [...list.querySelectorAll("[data-figure]")]) {
    const value = figures[row.dataset.figure];
    if (value) row.querySelector("dd").textContent = value;
    else row.remove();
  }
  return list;
}
