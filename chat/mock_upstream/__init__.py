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
    cached         cached prompt tokens to report (cache reads)
    cache_write    prompt tokens reported as written to the cache (Anthropic's cache_creation_input_tokens,
                   OpenRouter's prompt_tokens_details.cache_write_tokens)
    cost           a cost in USD to report as `usage.cost`, as LiteLLM and OpenRouter do
    reply          `xss` or `markdown`: a canned reply instead of generated words
    fault          429, 500, 503, 400, 401 (always), 429x2, 500x1, 502x1, 503x1, 504x1 (the first
                   N attempts of the same request body), echo_key (a 401 whose message quotes the
                   request's Authorization or x-api-key header, as some gateways do), drop_before, stall_first, stall_mid,
                   drop_mid, malformed, error_mid, rate_limit_mid (a rate-limit error event mid-stream),
                   no_usage, null_usage (usage counts sent as null), no_done, no_finish (a clean end of
                   stream with no finish reason, stop reason, `[DONE]` or `message_stop`)
    after          tokens sent before a mid-stream fault (default 3)
    retry_after    the Retry-After of a 429, in seconds (default 1)
"""

import asyncio
import threading
import time
from collections import deque

from .server import Connection


class Record:
    """One generation request, as the log reports it."""

    __slots__ = ("id", "path", "model", "fault", "stream", "prompt_tokens", "cached", "cache_write", "tokens_sent",
                 "tag", "first_token_at", "status", "http_status", "ended_at", "words")
    FIELDS = __slots__[:-1]

    def __init__(self, id, path):
        self.id, self.path = id, path
        self.model = self.fault = self.tag = ""
        self.stream = False
        self.prompt_tokens = self.cached = self.cache_write = self.tokens_sent = 0
        self.first_token_at = self.ended_at = None  # ended_at: time.time() when it ended, by either side
        self.status, self.http_status = "open", 0
        self.words = ()  # the reply's tokens, of which the first `tokens_sent` were written

    def as_dict(self):
        """Return the record as a plain dict, with `text`: what was written of the reply."""
        fields = {name: getattr(self, name) for name in self.FIELDS}
        fields["text"] = "".join(self.words[: self.tokens_sent])
        return fields



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
            record.status, record.ended_at = status, time.time()
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
