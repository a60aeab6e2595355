"""The soak's people: each loads the page, opens the websocket and chats, waiting, stopping or leaving.

Every `send` leaves a `Sent` in the ledger with what the person saw: the `start`, each delta's text,
every `done` and `error`, and whether the socket was dropped. A person drops a socket only after
`start`, so the server has accepted every message that was sent and the reconciliation can demand
a record for each.
"""

import asyncio
import json
import random
import time

from bench import client

# What a person does with a reply, and how often.
ACTIONS = (("wait", 0.72), ("stop", 0.12), ("stop_before_first_token", 0.06), ("drop", 0.10))
LENGTHS = (10, 40, 120)  # tokens in a reply
TIMEOUT = 60  # seconds a person waits for any frame before giving up on the reply


def model_for(action, tokens):
    """Return the mock model of a reply (a slow first token when it is to be stopped before it)."""
    ttft = 400 if action == "stop_before_first_token" else 50
    return f"mock/soak+ttft={ttft}+gap=15+tokens={tokens}"


MODELS = [model_for(a, t) for a in ("wait", "stop_before_first_token") for t in LENGTHS]


class Sent:
    """One message as its person saw it."""

    __slots__ = ("tag", "port", "action", "sent_at", "first_at", "message", "starts", "text", "dones", "errors",
                 "dropped", "ended_at")

    def __init__(self, tag, port, action):
        self.tag, self.port, self.action = tag, port, action
        self.sent_at, self.first_at, self.ended_at = time.time(), None, None
        self.message = None
        self.starts = 0
        self.text = []
        self.dones = []  # statuses of every `done` received
        self.errors = []  # codes of every `error` received
        self.dropped = False


class Chat(client.WebSocket):
    """A websocket whose frames are parsed whole and queued for the person (None: the socket closed)."""

    def __init__(self):
        super().__init__()
        self.frames = asyncio.Queue()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.frames.put_nowait(None)

    def frame(self, opcode, payload, now):
        if opcode == 1:
            self.frames.put_nowait((now, json.loads(payload)))
        else:
            super().frame(opcode, payload, now)

    def send_json(self, payload):
        self.transport.write(client.mask_frame(1, json.dumps(payload).encode()))

    async def next(self):
        """Return (arrival, frame), or None when the socket closed or nothing came within TIMEOUT."""
        try:
            return await asyncio.wait_for(self.frames.get(), TIMEOUT)
        except TimeoutError:
            return None


async def load_page(host, port, session=None):
    """GET the chat page; a newcomer then asks for a session as the page's first send does. Return it."""
    if session is None:
        return await client.get_session(host, port)
    head = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: sessionid={session}\r\nConnection: close\r\n\r\n"
    status, _ = await client.http(host, port, head)
    if not status.startswith("HTTP/1.1 200"):
        raise ConnectionError(f"GET / answered {status}")
    return session


def choose(rng):
    """Return what a person does with the next reply."""
    roll, total = rng.random(), 0.0
    for action, share in ACTIONS:
        total += share
        if roll < total:
            return action
    return ACTIONS[0][0]


async def converse(ws, sent, rng):
    """Send one message and act on its reply as `sent.action` says; return whether the socket is gone."""
    tokens = rng.choice(LENGTHS)
    ws.send_json({"type": "send", "content": sent.tag, "model": model_for(sent.action, tokens), "conversation": None})
    stop_after = rng.randint(1, 4) if sent.action in ("stop", "drop") else None
    deltas = 0
    while True:
        got = await ws.next()
        if got is None:
            sent.ended_at = time.time()
            return True
        now, frame = got
        kind = frame.get("type")
        if kind == "start":
            sent.starts += 1
            sent.message = frame.get("message")
            if sent.action == "stop_before_first_token":
                ws.send_json({"type": "stop"})
        elif kind == "delta":
            deltas += 1
            sent.text.append(frame["text"])
            if sent.first_at is None:
                sent.first_at = now
            if deltas == stop_after:
                if sent.action == "stop":
                    ws.send_json({"type": "stop"})
                else:  # drop: half hang up (FIN), half vanish (RST)
                    sent.dropped = True
                    sent.ended_at = time.time()
                    ws.transport.abort() if rng.random() < 0.5 else ws.transport.close()
                    return True
        elif kind == "done":
            sent.dones.append(frame.get("status"))
            sent.ended_at = now
            return False
        elif kind == "error":
            sent.errors.append(frame.get("code"))


async def arrive(host, port, session, retries):
    """Load the page and open the socket, as a browser would: again after 1, 2, 4, 8 s when refused.

    A loaded daphne drops a websocket whose handshake takes over 5 s (its --websocket_connect_timeout);
    each retry is counted in retries["handshakes"].
    """
    for attempt in range(5):
        try:
            session = await load_page(host, port, session)
            return session, await client.open_socket(host, port, session, Chat)
        except (OSError, TimeoutError):
            if attempt == 4:
                raise
            retries["handshakes"] += 1
            await asyncio.sleep(2 ** attempt)


async def person(index, host, ports, until, ledger, seed, retries, think=(0.3, 2.5)):
    """Chat until `until` (monotonic): load the page, open a socket, send, and come back after a drop."""
    rng = random.Random(seed)
    port = ports[index % len(ports)]
    session, count = None, 0
    await asyncio.sleep(rng.uniform(0, think[1]))  # people arrive over a few seconds, not all at once
    while time.monotonic() < until:
        session, ws = await arrive(host, port, session, retries)
        gone = False
        while not gone and time.monotonic() < until:
            sent = Sent(f"soak-{index}-{count}", port, choose(rng))
            count += 1
            ledger.append(sent)
            gone = await converse(ws, sent, rng)
            if not gone:
                await asyncio.sleep(rng.uniform(*think))
        if not gone:
            await ws.close()
