"""The concurrency cap: CHAT_MAX_CONCURRENT generations at once, the rest queued in order."""

import asyncio

from chat.relay import Slots


async def test_it_hands_a_freed_slot_to_the_oldest_waiter_not_a_newcomer(settings):
    settings.CHAT_MAX_CONCURRENT = 1
    settings.CHAT_QUEUE_TIMEOUT = 5
    slots = Slots(asyncio.get_running_loop())
    assert await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()
    newcomer = asyncio.create_task(slots.acquire())
    assert await waiting
    await asyncio.sleep(0.05)
    assert not newcomer.done()  # the slot went to the waiter; the newcomer queues behind it
    slots.release()
    assert await newcomer
    slots.release()
    assert slots.taken == 0 and not slots.waiters


async def test_it_refuses_after_the_queue_timeout_and_forgets_the_waiter(settings):
    settings.CHAT_MAX_CONCURRENT = 1
    settings.CHAT_QUEUE_TIMEOUT = 0.05
    slots = Slots(asyncio.get_running_loop())
    assert await slots.acquire()
    assert not await slots.acquire()
    assert slots.waiters == [] and slots.taken == 1
    slots.release()
    assert slots.taken == 0
