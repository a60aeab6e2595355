"""Summarize a py-spy raw (collapsed) profile of daphne: top functions by own time, and time per layer."""

import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")
# First match wins, from the innermost frame outwards: where the per-token CPU goes.
LAYERS = [
    ("SSE decoder (chat/sse.py)", "chat/sse.py"),
    ("provider: read_chunk / json.loads (chat/providers)", "chat/providers/"),
    ("json encode/decode", "/json/"),
    ("httpx read path (httpx, httpcore, h11, anyio)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("relay + Ticker (chat/relay.py)", "chat/relay.py"),
    ("channels (consumer, send wrappers, layers)", ("channels/", "channels_redis/", "asgiref/")),
    ("daphne (ws protocol, handle_reply)", "daphne/"),
    ("autobahn (websocket framing)", ("autobahn/", "txaio/")),
    ("twisted (reactor, transports)", "twisted/"),
    ("django (ORM, sessions, views, templates)", "django/"),
    ("sqlite / psycopg", ("sqlite3", "psycopg")),
    ("asyncio event loop", "asyncio/"),
    ("threads / concurrent.futures", ("threading.py", "concurrent/")),
]


# What the process was doing, judged from the whole stack (first match wins).
ACTIVITIES = [
    ("page GET: Django middleware, view, template, session", ("django/core/handlers/", "chat/views.py",
                                                              "django/middleware/", "sessions/middleware",
                                                              "ThreadSensitiveContext")),
    ("ws handshake, connect, disconnect", ("processHandshake", "websocket_connect", "ChatConsumer.connect",
                                           "ChatConsumer.disconnect", "resolve_scope", "onConnect")),
    ("request DB work: turns.start / turns.finish (thread)", ("chat/turns.py",)),
    ("the done frame's Markdown (a worker thread)", ("chat/markdown.py",)),
    ("per token: upstream read -> parse -> frame (Generation.relay)", ("Generation.relay", "OpenAIProvider.stream",
                                                                         "httpx/", "httpcore/", "h11/", "anyio/",
                                                                         "chat/sse.py", "chat/providers/")),
    ("coalesced frames sent by the Ticker", ("Ticker._run",)),
    ("rest of the reply: start/done frames, finish (relay.py)", ("chat/relay.py",)),
    ("daphne/twisted I/O outside the relay (reads, writes, timers)", ("twisted/", "daphne/", "autobahn/")),
    ("asyncio loop: select and callbacks", ("asyncio/", "selectors.py")),
]
IDLE_LEAVES = (("_worker ", "thread.py:81)"), ("Condition.wait ", ""), ("EpollSelector.select ", ""))


def idle(leaf):
    """Return whether a stack's innermost frame is a wait (py-spy does not always see it as idle)."""
    return any(leaf.startswith(func) and mark in leaf for func, mark in IDLE_LEAVES)


def activity_of(stack):
    """Return the activity a stack belongs to."""
    for name, marks in ACTIVITIES:
        if any(m in stack for m in marks):
            return name
    return "other"


def layer_of(files):
    """Return the layer of a stack (its innermost frame that belongs to one), else 'other'."""
    for path in reversed(files):
        for name, marks in LAYERS:
            marks = (marks,) if isinstance(marks, str) else marks
            if any(m in path for m in marks):
                return name
    return "other"


def parse(path):
    """Yield (frames [(func, file)], samples) from a py-spy raw file."""
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        if idle(stack.rsplit(";", 1)[-1]):
            continue  # a thread waiting for work, or the loop waiting in epoll: not CPU
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part.strip())
            frames.append((m["func"], m["file"]) if m else (part.strip(), ""))
        yield frames, int(count)


def summarize(path, round_result=None, top=25, label=""):
    """Return {'self': [...], 'layers': [...], 'markdown': str}; µs per token when the round is given."""
    own, layers, inclusive, total = Counter(), Counter(), Counter(), 0
    activities = Counter()
    for frames, n in parse(path):
        total += n
        activities[activity_of(";".join(f"{func} ({file})" for func, file in frames))] += n
        func, file = frames[-1]
        own[f"{func} ({short(file)})"] += n
        layers[layer_of([f for _, f in frames])] += n
        for name, marks in LAYERS:
            marks = (marks,) if isinstance(marks, str) else marks
            if any(any(m in f for m in marks) for _, f in frames):
                inclusive[name] += n
    if not total:
        return {"self": [], "layers": [], "markdown": "(empty profile)"}
    per_token = None
    if round_result and round_result.get("tokens_received"):
        cpu_s = (round_result["cpu_ms_per_request"] * round_result["requests"]
                 + round_result["cpu_ms_per_conversation_setup"] * round_result["c"]) / 1000
        per_token = cpu_s * 1e6 / round_result["tokens_received"]
    lines = [f"### Profile: py-spy{' (' + label + ')' if label else ''}, daphne, {total} samples"
             + (f" (C={round_result['c']}, gap {round_result['gap_ms']} ms; whole-process CPU "
                f"{per_token:.0f} µs per relayed token, page GETs, handshakes and records included)" if per_token else ""),
             "", "What the process was doing (whole stack; idle waits excluded):", "",
             "| activity | % of samples | µs per relayed token |", "|---|---:|---:|"]
    for name, n in activities.most_common():
        us = f"{per_token * n / total:.0f}" if per_token else "–"
        lines.append(f"| {name} | {100 * n / total:.1f} | {us} |")
    lines += ["", "Layer of the innermost frame (own time), and share of samples with the layer anywhere on the stack:",
             "", "| layer | own % | µs/token (own) | on stack % |", "|---|---:|---:|---:|"]
    for name, n in layers.most_common():
        us = f"{per_token * n / total:.0f}" if per_token else "–"
        lines.append(f"| {name} | {100 * n / total:.1f} | {us} | {100 * inclusive.get(name, 0) / total:.1f} |")
    lines += ["", f"Top {top} functions by own time:", "", "| function | own % |", "|---|---:|"]
    for name, n in own.most_common(top):
        lines.append(f"| `{name}` | {100 * n / total:.1f} |")
    return {"total": total, "self": own.most_common(top), "layers": layers.most_common(),
            "inclusive": dict(inclusive), "activities": activities.most_common(), "per_token_us": per_token, "markdown": "\n".join(lines)}


def short(file):
    for mark in ("site-packages/", "lib/python3.11/", "/main/"):
        if mark in file:
            return file.split(mark, 1)[1]
    return file


if __name__ == "__main__":
    print(summarize(sys.argv[1])["markdown"])
