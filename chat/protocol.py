"""The websocket protocol (docs/DESIGN.md): client frames parsed and checked, server frames built.

Every frame the server sends is built here, as text ready for the socket. The error a person sees
is a ProtocolError (FrameError here, chat.limits.Refused, chat.caps.Full, chat.providers.UpstreamError):
its message, and its `code`, the protocol's error code.
"""

import json
import re

from django.conf import settings

from chat import figures

MAX_DEPTH = 8  # frames are flat objects; anything deeper is an attack on the parser, not a message
STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, unrolled: fast in C


class ProtocolError(Exception):
    """An error sent to the person as an `error` frame: the message they read, and its protocol `code`."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class FrameError(ProtocolError):
    """A frame the server cannot act on."""

    def __init__(self, message, code="bad_request"):
        super().__init__(message, code)


def parse(text):
    """Return a client frame as a dict with defaults filled in, or raise FrameError."""
    if text is None:
        raise FrameError("Frames must be JSON text, not binary.")
    if len(text) > settings.CHAT_MAX_PROMPT_CHARS * 6 + 1024:
        raise FrameError("The frame is too large.")
    if _deeper_than(text, MAX_DEPTH):
        raise FrameError(f"The frame is nested too deeply (more than {MAX_DEPTH} levels).")
    try:
        frame = json.loads(text)
    except ValueError:
        raise FrameError("The frame is not valid JSON.") from None
    except RecursionError:  # a backstop: _deeper_than already refused anything this deep
        raise FrameError("The frame is nested too deeply.") from None
    if not isinstance(frame, dict):
        raise FrameError("A frame must be a JSON object.")
    kind = frame.get("type")
    if kind == "stop":
        return {"type": "stop", "message": _optional_id(frame, "message"), "seq": _optional_seq(frame)}
    if kind == "resume":
        return {"type": "resume", **_resume_fields(frame)}
    if kind == "follow":
        return {"type": "follow", "conversation": _optional_id(frame, "conversation")}
    if kind != "send":
        raise FrameError(f"Unknown frame type {kind!r}: expected 'send', 'stop', 'resume' or 'follow'.")
    return {"type": "send", **_send_fields(frame)}


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _optional_id(frame, name):
    value = frame.get(name)
    if value is not None and not _is_id(value):
        raise FrameError(f"'{name}' must be an id or null.")
    return value


def _optional_seq(frame):
    value = frame.get("seq")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise FrameError("'seq' must be the last seq the page shows (0 or more), or null.")
    return value


MAX_RESUMED = 50  # replies a page may ask about in one `resume`


def _resume_fields(frame):
    have = frame.get("have") or {}
    if not isinstance(have, dict) or len(have) > MAX_RESUMED:
        raise FrameError(f"'have' must be an object of at most {MAX_RESUMED} message ids and seqs.")
    seqs = {}
    for key, seq in have.items():
        if not str(key).isdigit() or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise FrameError("'have' maps message ids to the last seq received (0 or more).")
        seqs[int(key)] = seq
    return {"conversation": _optional_id(frame, "conversation"), "have": seqs}


def _send_fields(frame):
    content = frame.get("content")
    if not isinstance(content, str) or not content.strip():
        raise FrameError("The message is empty.")
    if not _is_unicode(content):
        raise FrameError("The message is not valid Unicode (it holds a lone surrogate).")
    if len(content) > settings.CHAT_MAX_PROMPT_CHARS:
        raise FrameError(
            f"The message is too long ({len(content):,} characters; the limit is {settings.CHAT_MAX_PROMPT_CHARS:,}).",
        )
    model = frame.get("model") or settings.CHAT_MODELS[0]
    if model not in settings.CHAT_MODELS:
        raise FrameError(f"Unknown model {str(model)[:100]!r}.", "unknown_model")
    conversation = frame.get("conversation")
    if conversation is not None and (not isinstance(conversation, int) or isinstance(conversation, bool)):
        raise FrameError("'conversation' must be a conversation id or null.")
    stream = frame.get("stream", True)
    if not isinstance(stream, bool):
        raise FrameError("'stream' must be true or false.")
    return {"content": content, "model": model, "conversation": conversation, "stream": stream}


def _deeper_than(text, limit):
    """Return True when the JSON in `text` nests arrays and objects deeper than `limit`.

    Strings are cut out first (in C, by a regex), so brackets inside a message cost nothing and
    only the frame's structure is walked.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for char in STRINGS.sub("", text):
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _is_unicode(text):
    """Return False when `text` holds a lone surrogate (JSON allows "\\ud800"; UTF-8 and the database do not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- server frames ------------------------------------------------------------------------------
# Each returns the frame's text. All but `delta` are json.dumps with its default separators; `delta`,
# the one frame per coalesced batch of tokens, is compact and its head is encoded once per reply.


def start(conversation, message, model, title):
    """Return the `start` frame: a reply was accepted and stored empty."""
    return json.dumps({"type": "start", "conversation": conversation, "message": message, "model": model,
                       "title": title})


def delta_head(message):
    """Return the text every `delta` frame of reply `message` begins with."""
    return '{"type":"delta","message":%d,"seq":' % message


def delta(head, seq, text):
    """Return a `delta` frame: the reply's text from its `seq`th frame (head: `delta_head`)."""
    return f'{head}{seq},"text":{json.dumps(text)}}}'


CATCHUP_HEAD = '{"type": "catchup"'  # how a `catchup` frame's text begins (a watcher spots one by it)


def catchup(conversation, message, model, after, seq, text):
    """Return the `catchup` frame: the text of deltas `after`+1 … `seq` of a reply in flight."""
    return json.dumps({"type": "catchup", "conversation": conversation, "message": message, "model": model,
                       "after": after, "seq": seq, "text": text})


def resumed(conversation, messages):
    """Return the `resumed` frame that ends the answer to `resume`: the replies now watched."""
    return json.dumps({"type": "resumed", "conversation": conversation, "messages": messages})


def reply(conversation, message, model, content):
    """Return the `reply` frame: another socket of the person's started reply `message` after `content`."""
    return json.dumps({"type": "reply", "conversation": conversation, "message": message, "model": model,
                       "content": content})


def error(code, message, ref=None):
    """Return an `error` frame; with `ref` (a usage record's request id) the message ends with it."""
    if ref is None:
        return json.dumps({"type": "error", "code": code, "message": message})
    return json.dumps({"type": "error", "code": code, "message": f"{message} Reference: {ref}.", "ref": ref})


def done(reply, html):
    """Return the `done` frame of a stored reply (chat.turns.Stored), its text rendered as `html`.

    Without `shows_usage` (CHAT_SHOW_USAGE) the frame holds no usage or cost at all: not sent,
    rather than sent and hidden by the page.
    """
    record = reply.record
    frame = {"type": "done", "message": reply.message_id, "status": reply.status}
    if reply.shows_usage:
        if record is None:
            frame["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "estimated": False}
        else:
            frame["usage"] = {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
                              "estimated": record.estimated}
        frame["cost_usd"] = None if record is None or record.cost_usd is None else f"{record.cost_usd:.10f}"
    frame["ttft_ms"] = None if record is None else record.ttft_ms
    frame["html"] = html
    frame["figures"] = None if record is None else figures.of_record(record, reply.shows_usage)
    return json.dumps(frame)
