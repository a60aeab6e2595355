"""chatsite.lean_daphne's pieces on their own: the application input queue and the factory's protocol
class. The served process (daphne with them, the handshake's state dropped) is tested in
tests/live/test_lean_daphne.py."""

import asyncio

import pytest

from chatsite.lean_daphne import InputQueue, WebSocketFactory, WebSocketProtocol


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
