"""Measure what rendering a reply's Markdown as it streams costs the page's main thread, in chromium.

    .venv/bin/python bench/markdown_stream.py            # 3 repeats of each case (~1 minute)
    .venv/bin/python bench/markdown_stream.py --repeats 5

Serves static/ on a free port, loads static/chat/reply.js in Debian's chromium (headless), and
streams Markdown replies of a few lengths into a LiveReply at a fast model's pace (deltas every 30 ms,
CHAT_FLUSH_MS). It reports the renders, the main-thread time they took (median of the repeats) and
that time as a share of the reply's wall time: the page's way (only the blocks whose source changed,
paced so a render takes at most a quarter of the thread), the same on every animation frame, and the
whole text rendered and sanitised on every frame. See docs/PERFORMANCE.md.
"""

import argparse
import functools
import statistics
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

BLOCK = (
    "## Step {i}\n\nSome **bold** text, a `code span` and a [link](https://example.com/{i}).\n\n"
    "- first point of step {i}\n- second point, a little longer than the first\n\n"
    "```python\ndef step_{i}(value):\n    return value * {i}  # comment\n```\n\n"
    "| key | value |\n|---|--:|\n| a | {i} |\n\n"
)

# The alternative it replaced, for comparison: the whole text rendered and sanitised on every frame.
WHOLE = """async ([text, pieceChars, everyMs]) => {
  const { render } = await import("/chat/markdown.js");
  const content = document.createElement("div");
  document.body.replaceChildren(content);
  let shown = "", pending = "", renders = 0, renderMs = 0, frame = 0;
  const draw = () => {
    frame = 0;
    const t = performance.now();
    content.replaceChildren(render(pending));
    shown = pending;
    renders += 1;
    renderMs += performance.now() - t;
  };
  const started = performance.now();
  for (let at = 0; at < text.length; at += pieceChars) {
    pending = text.slice(0, at + pieceChars);
    if (!frame) frame = requestAnimationFrame(draw);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  return { renders, renderMs, wallMs: performance.now() - started, chars: shown.length };
}"""

STREAM = """async ([text, pieceChars, everyMs, ratio]) => {
  const { LiveReply } = await import("/chat/reply.js");
  const article = document.createElement("article");
  article.innerHTML = '<div class="bubble"><div class="content markdown streaming"></div></div>';
  document.body.replaceChildren(article);
  const reply = new LiveReply(article, { onGrow: () => {} });
  reply.ratio = ratio;
  const started = performance.now();
  for (let at = 0; at < text.length; at += pieceChars) {
    reply.append(text.slice(at, at + pieceChars));
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const wall = performance.now() - started;
  return { renders: reply.renders, renderMs: reply.renderMs, wallMs: wall, chars: text.length };
}"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        """Log nothing: the report is the output."""


def serve(directory):
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server = serve(ROOT / "static")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # ~4 characters a token; 12 characters every 30 ms is ~100 tokens/s, a fast model.
    sizes = (5, 20, 60)  # blocks of BLOCK: ~1,000 to ~12,000 characters
    print("| reply | pacing | renders | render ms (median) | share of wall time |")
    print("|---|---|--:|--:|--:|")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/chat/markdown.js")
        for blocks in sizes:
            text = "".join(BLOCK.format(i=i) for i in range(blocks))
            for label, script, arguments in (
                ("page: changed blocks, paced", STREAM, [text, 12, 30, 3]),
                ("changed blocks, every frame", STREAM, [text, 12, 30, 0]),
                ("whole text, every frame", WHOLE, [text, 12, 30]),
            ):
                runs = [page.evaluate(script, arguments) for _ in range(args.repeats)]
                ms = statistics.median(r["renderMs"] for r in runs)
                share = statistics.median(r["renderMs"] / r["wallMs"] for r in runs)
                renders = statistics.median(r["renders"] for r in runs)
                print(f"| {len(text):,} chars (~{len(text) // 4:,} tokens) | {label} | {renders:.0f} | {ms:.0f} | {share:.1%} |")
                sys.stdout.flush()
        browser.close()
    server.shutdown()


if __name__ == "__main__":
    main()
