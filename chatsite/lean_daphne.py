"""daphne with less state kept per open websocket (used by `python -m chatsite.serve`).

Measured with bench/memory.py (docs/PERFORMANCE.md, "Memory per open stream"), daphne, twisted and
autobahn keep ~40 KB per open websocket, much of it needed only for the handshake. This module
subclasses daphne's server, websocket factory and protocol (no change to the installed packages):

- The application's input queue is `InputQueue`, not an `asyncio.Queue`: asyncio's keeps four
  deques (its items, getters, putters and an Event's waiters), ~760 B each, for a queue that holds
  at most a message or two; this one keeps its items in a deque only while it has any.
- Once the handshake is done (`onOpen`), the websocket protocol drops what only the handshake used:
  twisted's upgrade request stays reachable through the `HTTPChannel`, which registered itself as
  the TCP transport's producer (with its `Headers`, a list per header, and the request body
  buffer); after the upgrade that channel's pause and resume do nothing (it is "handling" the upgrade
  request forever), so it is unregistered, and the request and channel, which refer to each other,
  are freed at once rather than left as cyclic garbage for a full collection. Also autobahn's
  parsed request (`http_headers`, the raw request and response, the request's URI, path, params)
  and daphne's `request` (its logs keep only the path), `clean_headers` (the scope keeps its own
  reference) and `application_deferred` (a fired Deferred, read only before the accept).
- autobahn's per-socket send queue (a deque) is made only when a write has to be queued.
- autobahn copies its ~40 protocol options from the factory onto every protocol's `__dict__`
  (~3 KB per socket) unless the protocol class has them: the factory makes a protocol class
  carrying the options it was given, as class attributes.
- autobahn resolves a closed socket's `is_closed` with the protocol itself (a cycle that left the
  protocol, its transport and per-connection objects for the garbage collector): daphne never reads
  that result, so once the connection is lost it is None.
- twisted's socket transports buffer every `write` and send it when the event loop next reports the
  socket writable: each frame costs a loop iteration of latency (several ms on a busy loop) and two
  `epoll_ctl` calls (the writer registered, then removed). The listening ports here make
  `WriteThrough` transports: a write while nothing is buffered is sent at once, and only what the
  kernel does not take is buffered, as before (docs/PERFORMANCE.md, "Writes sent at once").
"""

import asyncio
import collections
from functools import partial

from daphne.cli import CommandLineInterface
from daphne.server import Server as DaphneServer
from daphne.ws_protocol import WebSocketFactory as DaphneWebSocketFactory
from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol
from twisted.web.http import HTTPChannel

# What autobahn's server protocol reads only while it parses and answers the opening handshake.
HANDSHAKE_ONLY = (
    "http_headers",
    "http_request_data",
    "http_response_data",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "websocket_origin",
    "websocket_extensions",
)


class InputQueue:
    """An application's input queue, as daphne uses it: `put_nowait` from the protocol, `get` as the
    application's `receive`. FIFO and unbounded, like daphne's `asyncio.Queue()`, and as fair to
    several waiting getters; it holds a deque only while it has items, and a list of waiters only
    while someone waits."""

    __slots__ = ("_items", "_waiters")

    def __init__(self):
        self._items = None
        self._waiters = None

    def qsize(self):
        return len(self._items) if self._items else 0

    def empty(self):
        return not self._items

    def put_nowait(self, item):
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._wake()

    def get_nowait(self):
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    async def get(self):
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.done():
                    waiter.cancel()
                if self._items and not waiter.cancelled():
                    self._wake()  # it was woken for an item it will not take: the next getter takes it
                raise
            finally:
                self._forget(waiter)
        return self.get_nowait()

    def _wake(self):
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget(self, waiter):
        if self._waiters is not None:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass  # already removed
            if not self._waiters:
                self._waiters = None


class HandshakeRequest:
    """What daphne's websocket logs read of the opening request once the socket is open: its path."""

    __slots__ = ("path",)

    def __init__(self, path):
        self.path = path


class WebSocketProtocol(DaphneWebSocketProtocol):
    """daphne's websocket protocol, dropping the handshake's state once the socket is open, and
    making autobahn's send queue only for a socket that needs one."""

    # autobahn queues a write only when asked to send it "synced" or in chops (neither daphne nor
    # autobahn's own frames do) or behind such a write; every other write goes to the transport.
    # Its `_connectionMade` gives each socket an empty deque (~760 B) all the same: here the class's
    # empty tuple stands in for it until `sendData` must queue.
    send_queue = ()

    def _connectionMade(self):
        super()._connectionMade()
        if not self.__dict__.get("send_queue", True):  # the empty deque just made
            del self.send_queue

    def sendData(self, data, sync=False, chopsize=None):
        if (sync or (chopsize and chopsize > 0)) and "send_queue" not in self.__dict__:
            self.send_queue = collections.deque()
        super().sendData(data, sync, chopsize)

    def onOpen(self):
        super().onOpen()
        self.drop_handshake_state()

    def connectionLost(self, reason):
        """autobahn resolves `is_closed` with the protocol itself, a cycle (protocol -> Deferred ->
        protocol) that kept a closed socket's protocol, transport and per-connection objects for the
        garbage collector; daphne never reads that result, so it becomes None (docs/PERFORMANCE.md,
        "Cyclic garbage")."""
        super().connectionLost(reason)
        if getattr(self.is_closed, "result", None) is self:
            self.is_closed.result = None

    def drop_handshake_state(self):
        transport = self.transport
        channel = getattr(transport, "producer", None)
        if isinstance(channel, HTTPChannel):
            transport.unregisterProducer()  # the upgrade's channel: a no-op producer holding the request
            channel.requests.clear()  # the request and its channel refer to each other: free them now
        self.request = HandshakeRequest(self.request.path)
        self.__dict__.pop("clean_headers", None)
        self.__dict__.pop("application_deferred", None)  # fired: the application was made before the accept
        for name in HANDSHAKE_ONLY:
            self.__dict__.pop(name, None)


class WebSocketFactory(DaphneWebSocketFactory):
    """daphne's websocket factory, building protocols whose class carries the protocol options."""

    protocol = WebSocketProtocol

    def setProtocolOptions(self, **options):
        super().setProtocolOptions(**options)
        base = WebSocketFactory.protocol
        # staticmethod: an option that is a function (perMessageCompressionAccept) must not bind
        attrs = {name: staticmethod(getattr(self, name)) for name in base.CONFIG_ATTRS}
        self.protocol = type(base.__name__, (base,), {"__module__": __name__, **attrs})

    @classmethod
    def adopt(cls, factory):
        """Turn daphne's freshly built factory (`Server.run` makes it inline) into this class, before
        its protocol options are set."""
        if type(factory) is not DaphneWebSocketFactory:
            raise TypeError(f"expected daphne's WebSocketFactory, got {type(factory).__name__}")
        factory.__class__ = cls
        factory.protocol = cls.protocol
        return factory


class WriteThrough:
    """A twisted socket transport that sends a write at once while nothing waits in its buffer.

    twisted's `FileDescriptor.write` appends to the buffer and registers the socket for writability;
    the data leaves on the loop's next iteration (`doWrite`). Here a write that finds the buffer
    empty goes to `writeSomeData` (`socket.send`) directly; whatever the kernel does not take, and
    every write while something is buffered, takes twisted's own path, so the order, the producer's
    pause and the close after the buffer drains are twisted's. A send that finds the connection lost
    leaves the data to that path too, whose `doWrite` reports the loss as it always did.
    """

    def write(self, data):
        if (type(data) is bytes and data and self.connected and not self._writeDisconnected and not self.TLS
                and not self._tempDataBuffer and self.offset == len(self.dataBuffer)):
            sent = self.writeSomeData(data)
            if type(sent) is int:  # else an exception: the connection is lost, doWrite will say so
                if sent == len(data):
                    return
                data = data[sent:]
        super().write(data)


_write_through_classes = {}


def write_through(transport_class):
    """Return `transport_class` with `WriteThrough`'s write (one class per transport class)."""
    if issubclass(transport_class, WriteThrough):
        return transport_class
    cls = _write_through_classes.get(transport_class)
    if cls is None:
        cls = _write_through_classes[transport_class] = type(
            f"WriteThrough{transport_class.__name__}", (WriteThrough, transport_class), {"__module__": __name__})
    return cls


# bench/variants.py's `buffered-writes` variant turns this off to measure what it changes.
WRITE_THROUGH = True


class Server(DaphneServer):
    """daphne's server with `InputQueue`, this module's websocket factory and `WriteThrough` transports."""

    def listen_success(self, port):
        """Make the port's connections `WriteThrough` transports (a port listens before the loop runs)."""
        if WRITE_THROUGH and isinstance(getattr(port, "transport", None), type):
            port.transport = write_through(port.transport)
        return super().listen_success(port)

    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory):
        self._ws_factory = WebSocketFactory.adopt(factory)

    def create_application(self, protocol, scope):
        """daphne's `create_application` (4.2), with an `InputQueue` for the application's input."""
        assert "application_instance" not in self.connections[protocol]
        input_queue = InputQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope,
            receive=input_queue.get,
            send=partial(self.handle_reply, protocol),
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance,
            loop=asyncio.get_event_loop(),
        )
        return input_queue


class LeanCommandLineInterface(CommandLineInterface):
    """daphne's command line, serving with this module's `Server`."""

    server_class = Server
