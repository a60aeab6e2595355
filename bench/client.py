"""A lean load client: raw asyncio websocket and HTTP streams, little work per frame.

Every received frame costs one `time.time()`, one prefix check and one `bytes.count`: a delta's
tokens are the mock's words, each followed by a space, so the spaces in a frame are its tokens.
The same request logic streams either through chatsite (`/ws/chat/`) or straight from the mock
upstream over HTTP, so relay and direct are measured by the same code.
"""

import asyncio
import json
import os
import time

DELTA = b'{"type":"delta"'
SSE_TOKEN = b'"delta":{"content":'
HTTP_END = b"\r\n0\r\n\r\n"


class Request:
    """One reply as the client saw it."""

    __slots__ = ("tag", "sent_at", "first_at", "frames", "tokens", "status", "error", "done", "ended_at")

    def __init__(self, tag):
        self.tag = tag
        self.sent_at = time.time()
        self.first_at = self.ended_at = None
        self.frames = []  # (arrival time.time(), tokens in the frame)
        self.tokens = 0
        self.status = ""
        self.error = ""
        self.done = asyncio.get_running_loop().create_future()

    def end(self, status, error=""):
        """Mark the reply finished (once)."""
        if not self.done.done():
            self.status, self.error, self.ended_at = status, error, time.time()
            self.done.set_result(None)


def mask_frame(opcode, payload):
    """Return a masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + body


class WebSocket(asyncio.Protocol):
    """A websocket client connection speaking the chat protocol."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.open = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.req = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))
        if self.req is not None:
            self.req.end("error", "socket closed")
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        now = time.time()
        buf = self.buf
        buf += data
        if not self.open.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1")))
                self.transport.close()
                return
            self.open.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 127
            off = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, off = int.from_bytes(buf[pos + 2: pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, off = int.from_bytes(buf[pos + 2: pos + 10], "big"), pos + 10
            if size < off + n:
                break
            payload = bytes(buf[off: off + n])
            pos = off + n
            self.frame(b0 & 15, payload, now)
        if pos:
            del buf[:pos]

    def frame(self, opcode, payload, now):
        req = self.req
        if opcode == 1:
            if payload.startswith(DELTA):
                tokens = payload.count(b" ")
                if req is not None:
                    if req.first_at is None:
                        req.first_at = now
                    req.frames.append((now, tokens))
                    req.tokens += tokens
                return
            message = json.loads(payload)
            if req is None:
                return
            kind = message.get("type")
            if kind == "done":
                req.end(message.get("status", ""), "" if message.get("status") == "completed" else "status")
            elif kind == "error":
                req.end("error", message.get("code", "error"))
        elif opcode == 9:
            self.transport.write(mask_frame(10, payload))
        elif opcode == 8:
            if req is not None:
                req.end("error", "server closed")
            self.transport.close()

    def send(self, content, model):
        """Send a `send` frame for a new conversation; return its Request."""
        self.req = Request(content)
        body = json.dumps({"type": "send", "content": content, "model": model, "conversation": None})
        self.transport.write(mask_frame(1, body.encode()))
        return self.req

    async def close(self):
        """Close politely, waiting a little for the server's close."""
        if self.transport.is_closing():
            return
        self.transport.write(mask_frame(8, (1000).to_bytes(2, "big")))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 2)
        except TimeoutError:
            self.transport.close()


async def http(host, port, request):
    """Send one HTTP/1.1 request; return its status line and Set-Cookie values by name."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request.encode())
    data = await reader.read(-1)
    writer.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    cookies = {}
    for line in head.split("\r\n"):
        if line.lower().startswith("set-cookie:"):
            name, _, value = line.split(":", 1)[1].strip().partition("=")
            cookies[name] = value.split(";", 1)[0]
    return (head.splitlines()[0] if head else "nothing"), cookies


async def get_session(host, port):
    """Load the chat page, then ask for a session as its first send does; return the `sessionid` cookie."""
    status, cookies = await http(host, port, f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
    if not status.startswith("HTTP/1.1 200") or "csrftoken" not in cookies:
        raise ConnectionError(f"GET / answered {status}")
    token = cookies["csrftoken"]
    status, cookies = await http(
        host, port,
        f"POST /session/ HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: csrftoken={token}\r\nX-CSRFToken: {token}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    if "sessionid" not in cookies:
        raise ConnectionError(f"POST /session/ answered {status} and set no sessionid cookie")
    return cookies["sessionid"]


async def open_socket(host, port, session=None, protocol=None):
    """Open /ws/chat/ as the person with `session` (a new one if None); return the `protocol` (WebSocket)."""
    session = session or await get_session(host, port)
    loop = asyncio.get_running_loop()
    _, ws = await loop.create_connection(protocol or WebSocket, host, port)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    ws.transport.write(
        f"GET /ws/chat/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
        f"Cookie: sessionid={session}\r\n\r\n".encode()
    )
    await asyncio.wait_for(ws.open, 30)
    return ws


class Upstream(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection streaming chat completions straight from the mock."""

    def __init__(self):
        self.transport = None
        self.key = "x"  # the bearer token sent
        self.req = None
        self.in_body = False
        self.head = bytearray()
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.req is not None:
            self.req.end("error", "connection lost")
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        now = time.time()
        req = self.req
        if req is None:
            return
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 200"):
                req.end("error", bytes(self.head[:12]).decode("latin-1"))
                self.transport.close()
                return
            data = bytes(self.head[end + 4:])
            self.head.clear()
            self.in_body = True
        tokens = self.count(data)
        self.tail = (self.tail + data)[-24:]
        if tokens:
            if req.first_at is None:
                req.first_at = now
            req.frames.append((now, tokens))
            req.tokens += tokens
        if self.tail.endswith(HTTP_END):
            self.end_body()
            req.end("completed")

    def count(self, data):
        """Return the tokens in this read of the body: the mock's token events (one may span two reads)."""
        seen = self.tail + data
        return seen.count(SSE_TOKEN) - self.tail.count(SSE_TOKEN)

    def end_body(self):
        """Forget the finished response: the connection is ready for the next request."""
        self.in_body, self.tail, self.req = False, b"", None

    def send(self, host, port, content, model):
        """POST one streamed chat completion; return its Request."""
        self.req = Request(content)
        body = json.dumps({
            "model": model, "max_tokens": 1024, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": content}],
        }).encode()
        self.transport.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {self.key}\r\nAccept-Encoding: identity\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return self.req

    async def close(self):
        self.transport.close()


async def open_upstream(host, port):
    """Open one keep-alive connection to the mock upstream."""
    _, conn = await asyncio.get_running_loop().create_connection(Upstream, host, port)
    return conn
