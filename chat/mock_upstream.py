"""A mock OpenAI- and Anthropic-compatible upstream for tests, demos and benchmarks.

A raw asyncio HTTP/1.1 server (keep-alive; chunked streams, Content-Length JSON). Each stream is a
chain of timer callbacks writing pre-encoded bytes: no task, no coroutine and no big json.dumps
per token. It counts what it sent and notices a client that hangs up before the reply is
complete, so tests can prove that stopping a reply closed the upstream connection.

Endpoints: POST /v1/chat/completions, POST /v1/messages, GET /v1/models, GET /mock/stats
(`?log=0` leaves out the log), POST /mock/reset.

Per-request options ride in the model name, `gpt-4.1-mini+ttft=200+gap=5+tokens=30`:
    ttft, gap      milliseconds to the first token, and between tokens
    tokens         length of a generated reply (a canned reply has its own length)
    cached         cached prompt tokens to report
    reply          `xss` or `markdown`: a canned reply instead of generated words
    fault          429, 500, 503, 400, 401 (always), 429x2, 500x1, 502x1, 503x1, 504x1 (the first
                   N attempts of the same request body), drop_before, stall_first, stall_mid,
                   drop_mid, malformed, error_mid, no_usage, no_done
    after          tokens sent before a mid-stream fault (default 3)
    retry_after    the Retry-After of a 429, in seconds (default 1)
"""

import asyncio
import json
import logging
import math
import re
import threading
import time
import zlib
from collections import deque

log = logging.getLogger(__name__)

WORDS = tuple(
    "the a model token stream reply relay socket quick answer river stone light paper cloud green "
    "small bright window garden simple value signal market number letter silver orange basket "
    "planet engine little yellow bridge forest castle rocket pencil circle winter summer thunder "
    "mirror coffee travel button secret ladder velvet harbor candle marble meadow pepper canyon "
    "lantern island copper falcon violet anchor cotton saddle orchard".split()
)
WORD_JSON = tuple(json.dumps(word + " ").encode() for word in WORDS)  # 64 words: any odd stride visits all
TOKEN = re.compile(r"\s*\S+|\s+")
CANNED = {
    "xss": (
        "Here is **bold** text, an image <img src=x onerror=alert(1)> and a script "
        "<script>alert(1)</script> that must never run."
    ),
    "markdown": (
        "# A heading\n\nSome text before a list:\n\n- first item\n- second item\n- third item\n\n"
        '```python\ndef greet(name):\n    return f"Hello, {name}!"\n```\n\n'
        "| name | value |\n|---|---|\n| alpha | 1 |\n| beta | 2 |\n"
    ),
}
DATE_SUFFIX = "-2025-04-14"
OPTIONS = {"ttft": float, "gap": float, "tokens": int, "cached": int, "reply": str, "fault": str,
           "after": int, "retry_after": float}
STATUS_FAULT = re.compile(r"(400|401|429|500|502|503|504)(?:x(\d+))?")
FAULTS = {"drop_before", "stall_first", "stall_mid", "drop_mid", "malformed", "error_mid", "no_usage", "no_done"}
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}
ERROR_TYPES = {
    "openai": {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               429: "requests"},
    "anthropic": {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                  413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"},
}
MAX_HEAD, MAX_BODY = 65536, 16 * 1024 * 1024
END = b"0\r\n\r\n"


class BadRequest(Exception):
    """The request cannot be served; answered with a 400 in the protocol's error shape."""


class Record:
    """One generation request, as the log reports it."""

    __slots__ = ("id", "path", "model", "fault", "stream", "prompt_tokens", "tokens_sent", "tag",
                 "first_token_at", "status", "http_status")

    def __init__(self, id, path):
        self.id, self.path = id, path
        self.model = self.fault = self.tag = ""
        self.stream = False
        self.prompt_tokens = self.tokens_sent = 0
        self.first_token_at = None
        self.status, self.http_status = "open", 0

    def as_dict(self):
        """Return the record as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__}


class Plan:
    """What to answer to one generation request."""

    def __init__(self, api, payload, body, mock):
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
            raise BadRequest("'model' is required.")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("'messages' must be a non-empty list of objects.")
        self.api, self.requested = api, payload["model"]
        self.name, opts = parse_model(self.requested)
        self.model = self.name if re.search(r"-\d{4}-\d{2}-\d{2}$", self.name) else self.name + DATE_SUFFIX
        self.fault = opts.get("fault", "")
        self.ttft = opts.get("ttft", mock.ttft_ms) / 1000
        self.gap = opts.get("gap", mock.gap_ms) / 1000
        self.after = max(0, opts.get("after", 3))
        self.retry_after = opts.get("retry_after", 1)
        self.stream = payload.get("stream") is True
        self.include_usage = api == "anthropic" or bool((payload.get("stream_options") or {}).get("include_usage"))
        chars = sum(len(text_of(m.get("content"))) for m in messages) + len(text_of(payload.get("system")))
        self.prompt_tokens = max(1, math.ceil(chars / 4))
        self.cached = min(max(0, opts.get("cached", mock.cached)), self.prompt_tokens)
        users = [m for m in messages if m.get("role") == "user"]
        self.tag = text_of(users[-1].get("content")) if users else ""
        limit = payload.get("max_tokens") if api == "anthropic" else (
            payload.get("max_completion_tokens") or payload.get("max_tokens"))
        if api == "anthropic" and limit is None:
            raise BadRequest("max_tokens: Field required")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise BadRequest("max_tokens must be a positive integer.")
        if "reply" in opts:
            words = TOKEN.findall(CANNED[opts["reply"]])
        else:
            seed = zlib.crc32(body)
            start, stride = seed & 63, ((seed >> 6) & 31) * 2 + 1
            count = max(0, opts.get("tokens", mock.tokens))
            words = [WORDS[(start + i * stride) & 63] + " " for i in range(count)]
        self.truncated = limit is not None and limit < len(words)
        self.words = words[:limit] if self.truncated else words

    @property
    def finish_reason(self):
        """Return the protocol's reason for the end of a complete reply."""
        if self.api == "openai":
            return "length" if self.truncated else "stop"
        return "max_tokens" if self.truncated else "end_turn"

    def usage(self, sent):
        """Return the protocol's usage object for a reply of `sent` tokens."""
        if self.api == "openai":
            return {"prompt_tokens": self.prompt_tokens, "completion_tokens": sent,
                    "total_tokens": self.prompt_tokens + sent,
                    "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
        usage = {"input_tokens": self.prompt_tokens - self.cached, "output_tokens": sent}
        if self.cached:
            usage.update(cache_read_input_tokens=self.cached, cache_creation_input_tokens=0)
        return usage


def parse_model(requested):
    """Return (name, options) from `name+key=value+key=value`; raise BadRequest on a bad option."""
    name, *parts = requested.split("+")
    opts = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if key not in OPTIONS or not eq:
            raise BadRequest(f"Unknown mock option {part!r}: use one of {', '.join(OPTIONS)} as key=value.")
        try:
            opts[key] = OPTIONS[key](value)
        except ValueError:
            raise BadRequest(f"Mock option {key} needs a number, not {value!r}.") from None
    if opts.get("reply", "xss") not in CANNED:
        raise BadRequest(f"Unknown canned reply {opts['reply']!r}: use one of {', '.join(CANNED)}.")
    fault = opts.get("fault")
    if fault is not None and fault not in FAULTS and not STATUS_FAULT.fullmatch(fault):
        raise BadRequest(f"Unknown mock fault {fault!r}.")
    return name, opts


def text_of(content):
    """Return the text of a message content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def error_body(api, status, message):
    """Return an error response body in the protocol's shape."""
    kind = ERROR_TYPES[api].get(status, "server_error" if api == "openai" else "api_error")
    if api == "openai":
        code = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"type": "error", "error": {"type": kind, "message": message}}


def response_head(status, headers, keep_alive):
    """Return the status line and headers of a response, encoded."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"] + [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data):
    """Return `data` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class OpenAIEvents:
    """The chat.completion.chunk events of one reply, pre-encoded."""

    def __init__(self, plan, rid):
        self.plan = plan
        model = json.dumps(plan.model).encode()
        self.head = (b'data: {"id":"chatcmpl-mock%d","object":"chat.completion.chunk","created":%d,"model":%b,'
                     b'"system_fingerprint":"fp_mock","choices":[' % (rid, time.time(), model))
        self.token_prefix = self.head + b'{"index":0,"delta":{"content":'

    def preamble(self):
        return self.head + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},' \
                           b'"logprobs":null,"finish_reason":null}],"usage":null}\n\n'

    def token(self, text_json):
        return self.token_prefix + text_json + b'},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'

    def tail(self, sent):
        plan = self.plan
        out = self.head + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}],"usage":null}\n\n' % (
            plan.finish_reason.encode())
        if plan.include_usage and plan.fault != "no_usage":
            out += self.head + b'],"usage":' + json.dumps(plan.usage(sent)).encode() + b"}\n\n"
        return out if plan.fault == "no_done" else out + b"data: [DONE]\n\n"

    def error(self):
        return b'data: {"error": {"message": "The server had an error while processing your request.", ' \
               b'"type": "server_error", "param": null, "code": null}}\n\n'


class AnthropicEvents:
    """The Messages API stream events of one reply, pre-encoded."""

    token_prefix = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":')

    def __init__(self, plan, rid):
        self.plan, self.rid = plan, rid

    def preamble(self):
        usage = self.plan.usage(1)  # output_tokens 1 is Anthropic's placeholder; message_delta has the count
        start = {"type": "message_start", "message": {
            "id": f"msg_mock{self.rid}", "type": "message", "role": "assistant", "model": self.plan.model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}
        return (b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
                b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\n'
                b'event: ping\ndata: {"type": "ping"}\n\n')

    def token(self, text_json):
        return self.token_prefix + text_json + b"}}\n\n"

    def tail(self, sent):
        plan = self.plan
        usage = b"" if plan.fault == "no_usage" else b',"usage":{"output_tokens":%d}' % sent
        out = (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
               b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"%b",'
               b'"stop_sequence":null}%b}\n\n' % (plan.finish_reason.encode(), usage))
        return out if plan.fault == "no_done" else out + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

    def error(self):
        return b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'


JSON_OF = {word + " ": encoded for word, encoded in zip(WORDS, WORD_JSON)}
MID_FAULTS = {"stall_mid", "drop_mid", "malformed", "error_mid"}
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Transfer-Encoding", "chunked"),
               ("Cache-Control", "no-cache")]
API_PATHS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


class Reply:
    """One generation response in progress: a chain of timer callbacks writing a stream, or one JSON body."""

    def __init__(self, conn, record, plan):
        self.conn, self.record, self.plan = conn, record, plan
        self.events = (OpenAIEvents if plan.api == "openai" else AnthropicEvents)(plan, record.id)
        self.limit = min(plan.after, len(plan.words)) if plan.fault in MID_FAULTS else len(plan.words)
        self.index = 0
        self.begun = self.waiting = self.done = False
        self.handle = None

    def start(self):
        """Send the headers of a stream, and schedule the first token (or the whole answer)."""
        plan, loop = self.plan, self.conn.loop
        self.record.http_status = 200
        self.conn.mock.stream_opened()
        if plan.stream:
            headers = SSE_HEADERS + [("x-request-id", f"req_mock{self.record.id}")]
            self.conn.transport.write(response_head(200, headers, self.conn.keep_alive))
            if plan.fault != "stall_first":
                self.handle = loop.call_later(plan.ttft, self.step)
        elif plan.fault not in ("stall_first", "stall_mid"):
            self.handle = loop.call_later(plan.ttft + plan.gap * max(len(plan.words) - 1, 0), self.answer)

    def step(self):
        """Write the next token (all of them when there is no gap); end the stream after the last."""
        self.handle = None
        conn, plan, events = self.conn, self.plan, self.events
        if conn.closed:
            return
        if conn.paused:  # the client reads slowly: resume_writing() calls step again
            self.waiting = True
            return
        parts = []
        if not self.begun:
            self.begun = True
            parts.append(events.preamble())
        first, words = self.index, plan.words
        end = self.limit if plan.gap <= 0 else min(first + 1, self.limit)
        for word in words[first:end]:
            parts.append(events.token(JSON_OF.get(word) or json.dumps(word).encode()))
        self.index = end
        last, fault = end >= self.limit, plan.fault
        if last:
            if fault == "malformed":
                parts.append(b"data: {not json\n\n")
            elif fault == "error_mid":
                parts.append(events.error())
            elif fault not in ("stall_mid", "drop_mid"):
                parts.append(events.tail(end))
        data = chunk(b"".join(parts))
        if last and fault not in ("stall_mid", "drop_mid"):
            data += END
        status = ""
        if last and fault != "stall_mid":  # a stalled stream stays open until the client hangs up
            status = "failed" if fault in MID_FAULTS else "completed"
        self.settle(status, end - first)
        conn.transport.write(data)
        if end > first and self.record.first_token_at is None:
            self.record.first_token_at = time.time()
        if not last:
            self.handle = conn.loop.call_later(plan.gap, self.step)
        elif status:
            self.release(close=fault == "drop_mid")

    def answer(self):
        """Write a non-streamed reply as one JSON body."""
        self.handle = None
        conn, plan, fault = self.conn, self.plan, self.plan.fault
        if conn.closed:
            return
        if fault == "error_mid":
            self.record.http_status = 500
            self.settle("error_status")
            conn.respond_json(500, error_body(plan.api, 500, "The server had an error while processing your request."))
            return self.release()
        body = b"{not json" if fault == "malformed" else json.dumps(self.message()).encode()
        head = response_head(200, [("Content-Type", "application/json"), ("Content-Length", len(body))],
                             conn.keep_alive)
        if fault in ("drop_mid", "malformed"):
            self.settle("failed")
            conn.transport.write(head + (body[: len(body) // 2] if fault == "drop_mid" else body))
            return self.release(close=fault == "drop_mid")
        self.settle("completed", len(plan.words))
        conn.transport.write(head + body)
        self.record.first_token_at = time.time()
        self.release()

    def message(self):
        """Return the protocol's complete non-streamed reply."""
        plan, rid, text = self.plan, self.record.id, "".join(self.plan.words)
        if plan.api == "openai":
            reply = {"id": f"chatcmpl-mock{rid}", "object": "chat.completion", "created": int(time.time()),
                     "model": plan.model, "system_fingerprint": "fp_mock",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                  "logprobs": None, "finish_reason": plan.finish_reason}]}
        else:
            reply = {"id": f"msg_mock{rid}", "type": "message", "role": "assistant", "model": plan.model,
                     "content": [{"type": "text", "text": text}], "stop_reason": plan.finish_reason,
                     "stop_sequence": None}
        if plan.fault != "no_usage":
            reply["usage"] = plan.usage(len(plan.words))
        return reply

    def client_closed(self):
        """Count a client that hung up before the reply was complete."""
        if not self.done:
            self.settle("closed_early")
            self.release()

    def settle(self, status, tokens=0):
        """Count the tokens about to be written and, with a `status`, how the reply ended.

        Counting comes before writing: a client may read the bytes and ask for the stats at once.
        """
        if tokens:
            self.conn.mock.sent(self.record, tokens)
        if status and not self.done:
            self.done = True
            self.conn.mock.finish(self.record, status, was_open=True)

    def release(self, close=False):
        """Close the connection, or serve the next request on it."""
        if self.handle is not None:
            self.handle.cancel()
        conn = self.conn
        conn.reply = None
        if close or not conn.keep_alive:
            conn.close()
        elif conn.buffer:
            conn.loop.call_soon(conn.process)


class Connection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests and answers them one at a time."""

    def __init__(self, mock):
        self.mock, self.loop = mock, mock.loop
        self.transport = self.reply = None
        self.buffer = bytearray()
        self.closed = self.paused = False
        self.keep_alive = True

    def connection_made(self, transport):
        """Called when a client connects."""
        self.transport = transport
        self.mock.connection_changed(self, True)

    def data_received(self, data):
        """Called with bytes from the client: serve the requests they complete."""
        self.buffer += data
        if self.reply is None:
            self.process()

    def eof_received(self):
        """Called when the client closes its side: close ours too (a reply in flight ends early)."""
        return False

    def connection_lost(self, exc):
        """Called when the connection is gone, by either side."""
        self.closed = True
        self.mock.connection_changed(self, False)
        if self.reply is not None:
            self.reply.client_closed()

    def pause_writing(self):
        """Called when the client reads slower than we write."""
        self.paused = True

    def resume_writing(self):
        """Called when the client has caught up: write the token that waited."""
        self.paused = False
        if self.reply is not None and self.reply.waiting:
            self.reply.waiting = False
            self.reply.step()

    def close(self):
        """Close the connection once written data is flushed."""
        if not self.closed:
            self.closed = True
            self.transport.close()

    def process(self):
        """Serve each complete request in the buffer, in order, until one needs time."""
        buffer = self.buffer
        while not self.closed and self.reply is None and buffer:
            while buffer[:2] == b"\r\n":
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self.reject(431, "Request headers are too large.")
                return
            lines = buffer[:end].decode("latin-1").split("\r\n")
            request = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if len(request) != 3 or not request[2].startswith("HTTP/1."):
                return self.reject(400, "Malformed request line.")
            if "transfer-encoding" in headers:
                return self.reject(501, "Chunked request bodies are not supported: send Content-Length.")
            length = headers.get("content-length", "0")
            if not length.isdigit() or int(length) > MAX_BODY:
                return self.reject(413 if length.isdigit() else 400, "Bad or too large Content-Length.")
            total = end + 4 + int(length)
            if len(buffer) < total:
                return
            body = bytes(buffer[end + 4:total])
            del buffer[:total]
            method, target, version = request
            self.keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            path, _, query = target.partition("?")
            try:
                self.route(method, path, query, body)
            except Exception:  # a bug in the mock must answer 500, not leave the client waiting
                log.exception("mock upstream failed on %s %s", method, path)
                if self.reply is None and not self.closed:
                    self.reject(500, "The mock upstream failed: see its log.")

    def route(self, method, path, query, body):
        """Answer one request."""
        mock = self.mock
        if path in API_PATHS:
            if method != "POST":
                return self.respond_json(405, error_body(API_PATHS[path], 405, f"Use POST for {path}."))
            return self.generate(API_PATHS[path], path, body)
        if path == "/v1/models" and method == "GET":
            names = ["gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5"]
            data = [{"id": name, "object": "model", "created": 1744588800, "owned_by": "mock"} for name in names]
            return self.respond_json(200, {"object": "list", "data": data})
        if path == "/mock/stats" and method == "GET":
            return self.respond_json(200, mock.stats(log="log=0" not in query))
        if path == "/mock/reset" and method == "POST":
            mock.reset()
            return self.respond_json(200, {"ok": True})
        self.respond_json(404, error_body("openai", 404, f"Unknown path {path!r}."))

    def generate(self, api, path, body):
        """Answer a chat completion or a message: an error, a fault, or a reply in progress."""
        mock = self.mock
        record = mock.begin(path)
        try:
            payload = json.loads(body)
            if isinstance(payload, dict):
                record.model = str(payload.get("model", ""))
            plan = Plan(api, payload, body, mock)
        except (ValueError, BadRequest) as exc:
            return self.fail(record, api, 400, str(exc) if isinstance(exc, BadRequest) else "The body is not JSON.")
        record.fault, record.stream, record.tag = plan.fault, plan.stream, plan.tag
        record.prompt_tokens = plan.prompt_tokens
        status_fault = STATUS_FAULT.fullmatch(plan.fault)
        if status_fault and mock.should_fail(body, status_fault.group(2)):
            status = int(status_fault.group(1))
            headers = [("Retry-After", f"{plan.retry_after:g}")] if status == 429 else []
            return self.fail(record, api, status, f"Mock fault {plan.fault}: HTTP {status}.", headers)
        if plan.fault == "drop_before":
            mock.finish(record, "failed")
            return self.close()
        self.reply = Reply(self, record, plan)
        self.reply.start()

    def fail(self, record, api, status, message, headers=()):
        """Answer a generation request with an error status."""
        record.http_status = status
        self.mock.finish(record, "error_status")
        self.respond_json(status, error_body(api, status, message), headers)

    def reject(self, status, message):
        """Answer a request that cannot be parsed, and close the connection."""
        self.keep_alive = False
        self.respond_json(status, error_body("openai", status, message))

    def respond_json(self, status, payload, headers=()):
        """Write a whole JSON response (Content-Length)."""
        body = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", len(body)), *headers]
        self.transport.write(response_head(status, headers, self.keep_alive) + body)
        if not self.keep_alive:
            self.close()


class MockUpstream:
    """The mock upstream server: its defaults, its counters and its log, served on an event loop."""

    def __init__(self, ttft_ms=50, gap_ms=10, tokens=40, cached=0, log_size=20_000):
        self.ttft_ms, self.gap_ms, self.tokens, self.cached = ttft_ms, gap_ms, tokens, cached
        self.loop = self.base_url = None
        self._server = self._thread = None
        self._cond = threading.Condition()
        self._log = deque(maxlen=log_size)
        self._attempts = {}  # hash of a request body -> failed attempts so far (faults 429x1, 500x2, …)
        self._conns = set()
        self._ids = 0
        self.open_streams = self.connections = 0
        self._zero()

    def _zero(self):
        self.requests = self.completed = self.closed_early = self.failed = self.error_status = 0
        self.tokens_sent = 0

    async def listen(self, host="127.0.0.1", port=0):
        """Start listening on the running loop; return the base URL."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: Connection(self), host, port, backlog=4096)
        self.base_url = f"http://{host}:{self._server.sockets[0].getsockname()[1]}"
        return self.base_url

    async def serve(self, host="127.0.0.1", port=8001, ready=None):
        """Serve forever on the running loop; call `ready(base_url)` once listening."""
        await self.listen(host, port)
        if ready is not None:
            ready(self.base_url)
        await self._server.serve_forever()

    def start_in_thread(self, host="127.0.0.1", port=0):
        """Serve in a thread with its own event loop; return the base URL once listening."""
        listening, failure = threading.Event(), []

        def run():
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.listen(host, port))
            except OSError as exc:
                failure.append(exc)
            listening.set()
            if not failure:
                loop.run_forever()
                loop.run_until_complete(asyncio.sleep(0))  # let connection_lost callbacks run
            loop.close()

        self._thread = threading.Thread(target=run, name="mock-upstream", daemon=True)
        self._thread.start()
        listening.wait()
        if failure:
            raise failure[0]
        return self.base_url

    def stop(self):
        """Stop the server started by start_in_thread, dropping every connection."""
        if self._thread is None or not self._thread.is_alive():
            return

        def shutdown():
            self._server.close()
            for conn in list(self._conns):
                conn.transport.abort()
            self.loop.stop()

        self.loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)

    def stats(self, log=True):
        """Return a snapshot of the counters (and the log of recent requests)."""
        with self._cond:
            snapshot = {"requests": self.requests, "completed": self.completed, "closed_early": self.closed_early,
                        "failed": self.failed, "error_status": self.error_status, "tokens_sent": self.tokens_sent,
                        "open_streams": self.open_streams, "connections": self.connections}
            if log:
                snapshot["log"] = [record.as_dict() for record in self._log]
        return snapshot

    def reset(self):
        """Clear the counters, the log and the fault attempts (open streams and connections stay counted)."""
        with self._cond:
            self._zero()
            self._log.clear()
            self._attempts.clear()

    def wait_idle(self, timeout=5.0):
        """Block until no response is in progress; return False if `timeout` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self.open_streams == 0, timeout)

    async def await_idle(self, timeout=5.0):
        """See wait_idle(); waits without blocking the calling event loop."""
        deadline = time.monotonic() + timeout
        while self.open_streams:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # Called on the server's loop.

    def begin(self, path):
        """Return the log record of a new generation request."""
        with self._cond:
            self._ids += 1
            self.requests += 1
            record = Record(self._ids, path)
            self._log.append(record)
        return record

    def stream_opened(self):
        """Count a response that has begun."""
        with self._cond:
            self.open_streams += 1

    def sent(self, record, count):
        """Count tokens written to a client socket."""
        with self._cond:
            record.tokens_sent += count
            self.tokens_sent += count

    def finish(self, record, status, was_open=False):
        """Record how a request ended."""
        with self._cond:
            record.status = status
            setattr(self, status, getattr(self, status) + 1)
            if was_open:
                self.open_streams -= 1
                if not self.open_streams:
                    self._cond.notify_all()

    def should_fail(self, body, times):
        """Return whether this attempt of a request answers its error status (`times` None: always)."""
        if times is None:
            return True
        key = hash(body)
        with self._cond:
            attempt = self._attempts.get(key, 0) + 1
            if attempt <= int(times):
                if len(self._attempts) > 100_000:
                    self._attempts.clear()
                self._attempts[key] = attempt
                return True
            self._attempts.pop(key, None)
            return False

    def connection_changed(self, conn, opened):
        """Count a connection opened or closed."""
        with self._cond:
            if opened:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)
            self.connections = len(self._conns)
