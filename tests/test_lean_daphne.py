"""chatsite.lean_daphne's pieces on their own: the application input queue, the factory's protocol
class and the write-through transport. The served process (daphne with them, the handshake's state dropped) is tested in
tests/live/test_lean_daphne.py."""

import asyncio
import socket

import pytest
from twisted.internet import main as twisted_main
from twisted.internet import tcp

from chatsite import lean_daphne
from chatsite.lean_daphne import InputQueue, WebSocketFactory, WebSocketProtocol, write_through


async def test_it_gives_items_in_order_and_holds_no_deque_when_empty():
    queue = InputQueue()
    assert queue._items is None and queue.empty()
    for i in range(3):
        queue.put_nowait(i)
    assert queue.qsize() == 3
    assert [await queue.get() for _ in range(3)] == [0, 1, 2]
    assert queue._items is None and queue._waiters is None


async def test_a_getter_waits_for_the_next_item():
    queue = InputQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait({"type": "websocket.connect"})
    assert await asyncio.wait_for(getter, 1) == {"type": "websocket.connect"}
    assert queue._waiters is None


async def test_waiting_getters_are_served_first_come_first_served():
    queue = InputQueue()
    getters = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "abc":
        queue.put_nowait(item)
    assert await asyncio.wait_for(asyncio.gather(*getters), 1) == ["a", "b", "c"]


async def test_a_getter_cancelled_after_it_was_woken_leaves_the_item_to_the_next():
    queue = InputQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes `first`
    first.cancel()  # before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "only"


async def test_a_cancelled_waiting_getter_takes_nothing():
    queue = InputQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert queue._waiters is None
    queue.put_nowait("kept")
    assert queue.get_nowait() == "kept"
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


def test_the_factory_gives_its_protocols_the_options_as_class_attributes():
    factory = WebSocketFactory(server_class=None, server="daphne")
    factory.setProtocolOptions(maxMessagePayloadSize=1234, openHandshakeTimeout=5)
    protocol_class = factory.protocol
    assert issubclass(protocol_class, WebSocketProtocol)
    assert protocol_class.maxMessagePayloadSize == 1234 and protocol_class.openHandshakeTimeout == 5
    protocol = factory.buildProtocol(None)
    # autobahn's default accepts no compression offer; a function option is not bound to the protocol
    assert protocol.perMessageCompressionAccept([]) is None
    assert set(WebSocketProtocol.CONFIG_ATTRS) <= set(vars(protocol_class))


class Written:
    def __init__(self):
        self.out = []

    def write(self, data):
        self.out.append(data)


def test_a_socket_has_a_send_queue_only_once_a_write_must_queue(monkeypatch):
    import txaio

    factory = WebSocketFactory(server_class=None, server="daphne")
    factory.setProtocolOptions()
    protocol = factory.buildProtocol(None)
    protocol.transport = Written()
    protocol._connectionMade()
    assert "send_queue" not in vars(protocol) and len(protocol.send_queue) == 0  # no deque per socket
    protocol.sendData(b"frame")
    assert protocol.transport.out == [b"frame"] and "send_queue" not in vars(protocol)
    later = []
    monkeypatch.setattr(txaio, "call_later", lambda delay, fn, *args: later.append(fn))
    protocol.sendData(b"abcd", chopsize=2)  # autobahn's queued path: a chop written, the reactor re-entered
    assert protocol.transport.out == [b"frame", b"ab"] and later == [protocol._send]
    protocol.sendData(b"behind")  # queued behind the rest, in order
    assert list(protocol.send_queue) == [(b"cd", True), (b"behind", False)]
    while later:
        later.pop()()
    assert protocol.transport.out == [b"frame", b"ab", b"cd", b"behind"] and not protocol.triggered


class Reactor:
    """What a transport asks of its reactor: which descriptors want to be told they can read or write."""

    def __init__(self):
        self.readers, self.writers = set(), set()

    def addReader(self, reader):
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)

    def addWriter(self, writer):
        self.writers.add(writer)

    def removeWriter(self, writer):
        self.writers.discard(writer)


class Protocol:
    def __init__(self):
        self.lost = []

    def connectionLost(self, reason):
        self.lost.append(reason)


@pytest.fixture
def pair():
    """A connected socket pair: a twisted server transport (write-through) on one end, a plain socket on the other."""
    ours, theirs = socket.socketpair()
    reactor = Reactor()
    transport = write_through(tcp.Server)(ours, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
    theirs.setblocking(False)
    yield transport, theirs, reactor
    ours.close()
    theirs.close()


def read_all(sock):
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        chunks.append(chunk)


def test_a_write_with_nothing_buffered_is_sent_at_once(pair):
    transport, theirs, reactor = pair
    transport.write(b"first frame")
    assert read_all(theirs) == b"first frame"  # on the wire, not waiting for the loop's next turn
    assert transport not in reactor.writers and not transport._tempDataBuffer


def test_what_the_kernel_does_not_take_is_buffered_and_sent_in_order(pair):
    transport, theirs, reactor = pair
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096  # 1 MiB: more than the socket pair holds
    transport.write(big)
    assert transport in reactor.writers and transport._tempDataLen < len(big)
    transport.write(b"after")  # something waits: this one is buffered behind it, not sent first
    received = read_all(theirs)
    while transport in reactor.writers:  # what the event loop does when the socket is writable again
        assert transport.doWrite() is None
        received += read_all(theirs)
    assert received == big + b"after"
    transport.write(b"again")  # the buffer drained: straight through once more
    assert read_all(theirs) == b"again" and transport not in reactor.writers


def test_a_write_to_a_lost_connection_is_left_to_twisted_to_report(pair):
    transport, theirs, reactor = pair
    theirs.close()
    transport.write(b"x" * 100_000)  # EPIPE/ECONNRESET: the data is buffered, the writer registered
    assert transport in reactor.writers
    assert transport.doWrite() is twisted_main.CONNECTION_LOST  # the loop then closes it, as twisted always did


def test_a_listening_port_makes_write_through_transports(monkeypatch):
    class Port:
        transport = tcp.Server

    port = Port()
    lean_daphne.Server.listen_success(lean_daphne.Server.__new__(lean_daphne.Server), port)
    assert issubclass(port.transport, lean_daphne.WriteThrough) and issubclass(port.transport, tcp.Server)
    assert write_through(port.transport) is port.transport and write_through(tcp.Server) is port.transport
    monkeypatch.setattr(lean_daphne, "WRITE_THROUGH", False)  # bench/variants.py's buffered-writes
    other = Port()
    lean_daphne.Server.listen_success(lean_daphne.Server.__new__(lean_daphne.Server), other)
    assert other.transport is tcp.Server
