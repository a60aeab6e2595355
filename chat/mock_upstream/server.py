"""Serve HTTP/1.1 on an asyncio Protocol, and write each reply as a chain of timer callbacks."""

import asyncio
import json
import logging
import time

from .plan import STATUS_FAULT, WORD_JSON, WORDS, BadRequest, Plan
from .wire import END, SSE_HEADERS, AnthropicEvents, OpenAIEvents, chunk, error_body, response_head

log = logging.getLogger(__package__)

MAX_HEAD, MAX_BODY = 65536, 16 * 1024 * 1024
JSON_OF = {word + " ": encoded for word, encoded in zip(WORDS, WORD_JSON)}
MID_FAULTS = {"stall_mid", "drop_mid", "malformed", "error_mid", "rate_limit_mid"}
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
            elif fault in ("error_mid", "rate_limit_mid"):
                parts.append(events.error(rate_limit=fault == "rate_limit_mid"))
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
        if fault in ("error_mid", "rate_limit_mid"):
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
            self.headers = headers
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
        record.prompt_tokens, record.words = plan.prompt_tokens, plan.words
        record.cached, record.cache_write = plan.cached, plan.cache_write
        status_fault = STATUS_FAULT.fullmatch(plan.fault)
        if status_fault and mock.should_fail(body, status_fault.group(2)):
            status = int(status_fault.group(1))
            headers = [("Retry-After", f"{plan.retry_after:g}")] if status == 429 else []
            return self.fail(record, api, status, f"Mock fault {plan.fault}: HTTP {status}.", headers)
        if plan.fault == "echo_key":  # as some gateways do: the request's key, back in the error text
            key = getattr(self, "headers", {}).get("authorization") or getattr(self, "headers", {}).get("x-api-key", "")
            return self.fail(record, api, 401, f"Incorrect API key provided: {key}. Find your key at "
                             "https://platform.example.com/api-keys.")
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
