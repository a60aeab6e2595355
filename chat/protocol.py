"""The websocket protocol's client frames: parsed and checked, with the error a person sees."""

import json
import re

from django.conf import settings

MAX_DEPTH = 8  # frames are flat objects; anything deeper is an attack on the parser, not a message
STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, unrolled: fast in C


class FrameError(Exception):
    """A frame the server cannot act on; `code` is the protocol's error code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def parse(text):
    """Return a client frame as a dict with defaults filled in, or raise FrameError."""
    if text is None:
        raise FrameError("bad_request", "Frames must be JSON text, not binary.")
    if len(text) > settings.CHAT_MAX_PROMPT_CHARS * 6 + 1024:
        raise FrameError("bad_request", "The frame is too large.")
    if _deeper_than(text, MAX_DEPTH):
        raise FrameError("bad_request", f"The frame is nested too deeply (more than {MAX_DEPTH} levels).")
    try:
        frame = json.loads(text)
    except ValueError:
        raise FrameError("bad_request", "The frame is not valid JSON.") from None
    except RecursionError:  # a backstop: _deeper_than already refused anything this deep
        raise FrameError("bad_request", "The frame is nested too deeply.") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_request", "A frame must be a JSON object.")
    kind = frame.get("type")
    if kind == "stop":
        return {"type": "stop", "message": _optional_id(frame, "message")}
    if kind == "resume":
        return {"type": "resume", **_resume_fields(frame)}
    if kind != "send":
        raise FrameError("bad_request", f"Unknown frame type {kind!r}: expected 'send', 'stop' or 'resume'.")
    return {"type": "send", **_send_fields(frame)}


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _optional_id(frame, name):
    value = frame.get(name)
    if value is not None and not _is_id(value):
        raise FrameError("bad_request", f"'{name}' must be an id or null.")
    return value


MAX_RESUMED = 50  # replies a page may ask about in one `resume`


def _resume_fields(frame):
    have = frame.get("have") or {}
    if not isinstance(have, dict) or len(have) > MAX_RESUMED:
        raise FrameError("bad_request", f"'have' must be an object of at most {MAX_RESUMED} message ids and seqs.")
    seqs = {}
    for key, seq in have.items():
        if not str(key).isdigit() or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise FrameError("bad_request", "'have' maps message ids to the last seq received (0 or more).")
        seqs[int(key)] = seq
    return {"conversation": _optional_id(frame, "conversation"), "have": seqs}


def _send_fields(frame):
    content = frame.get("content")
    if not isinstance(content, str) or not content.strip():
        raise FrameError("bad_request", "The message is empty.")
    if not _is_unicode(content):
        raise FrameError("bad_request", "The message is not valid Unicode (it holds a lone surrogate).")
    if len(content) > settings.CHAT_MAX_PROMPT_CHARS:
        raise FrameError(
            "bad_request",
            f"The message is too long ({len(content):,} characters; the limit is {settings.CHAT_MAX_PROMPT_CHARS:,}).",
        )
    model = frame.get("model") or settings.CHAT_MODELS[0]
    if model not in settings.CHAT_MODELS:
        raise FrameError("unknown_model", f"Unknown model {str(model)[:100]!r}.")
    conversation = frame.get("conversation")
    if conversation is not None and (not isinstance(conversation, int) or isinstance(conversation, bool)):
        raise FrameError("bad_request", "'conversation' must be a conversation id or null.")
    stream = frame.get("stream", True)
    if not isinstance(stream, bool):
        raise FrameError("bad_request", "'stream' must be true or false.")
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
