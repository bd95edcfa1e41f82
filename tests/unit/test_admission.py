"""The receiver's admission: how many readings it holds in flight and waiting, and when it refuses."""

from __future__ import annotations

import asyncio

import pytest

from receiver.admission import Admission
from runtime.errors import ResourceExhausted


class Entered:
    """A batch that holds its room (or waits for it) until told to leave."""

    def __init__(self, admission: Admission, n: int) -> None:
        self.leave = asyncio.Event()
        self.admitted = asyncio.Event()
        self.task = asyncio.create_task(self._run(admission, n))

    async def _run(self, admission: Admission, n: int) -> None:
        async with admission.hold(n):
            self.admitted.set()
            await self.leave.wait()


async def test_admits_up_to_the_limit_at_once() -> None:
    admission = Admission(limit=10, wait_s=1.0)
    async with admission.hold(4), admission.hold(6):
        assert admission.in_flight == 10
        assert admission.waiting == 0
    assert admission.in_flight == 0


async def test_a_batch_waits_for_room_and_gets_it() -> None:
    admission = Admission(limit=10, wait_s=5.0)
    first = Entered(admission, 8)
    await first.admitted.wait()
    second = Entered(admission, 5)
    await asyncio.sleep(0.01)
    assert admission.waiting == 5
    assert not second.admitted.is_set()
    first.leave.set()
    await asyncio.wait_for(second.admitted.wait(), 1.0)
    assert admission.in_flight == 5
    assert admission.waiting == 0
    second.leave.set()
    await second.task
    assert admission.in_flight == 0


async def test_a_batch_that_finds_no_room_in_time_is_refused_and_stops_waiting() -> None:
    admission = Admission(limit=10, wait_s=0.05)
    async with admission.hold(10):
        with pytest.raises(ResourceExhausted, match="10 readings in flight"):
            async with admission.hold(1):
                pass
        assert admission.waiting == 0
    assert admission.in_flight == 0


async def test_past_the_waiting_room_a_batch_is_refused_at_once() -> None:
    admission = Admission(limit=10, wait_s=5.0)
    async with admission.hold(10):
        waiter = Entered(admission, 10)
        await asyncio.sleep(0.01)
        assert admission.waiting == 10
        # Full, not even room to wait: refused before the request is parsed (full), or when it asks.
        assert isinstance(admission.full(), ResourceExhausted)
        with pytest.raises(ResourceExhausted, match="10 waiting"):
            async with admission.hold(1):
                pass
        waiter.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter.task
    assert admission.waiting == 0
    assert admission.in_flight == 0
    assert admission.full() is None


async def test_a_newcomer_does_not_overtake_a_waiting_batch() -> None:
    admission = Admission(limit=10, wait_s=5.0)
    first = Entered(admission, 6)
    await first.admitted.wait()
    waiter = Entered(admission, 8)
    await asyncio.sleep(0.01)
    # 6 + 2 would fit, but a larger batch is waiting: the newcomer waits behind it.
    newcomer = Entered(admission, 2)
    await asyncio.sleep(0.01)
    assert admission.in_flight == 6
    assert not newcomer.admitted.is_set()
    first.leave.set()
    await asyncio.wait_for(asyncio.gather(waiter.admitted.wait(), newcomer.admitted.wait()), 1.0)
    assert admission.in_flight == 10
    for batch in (waiter, newcomer):
        batch.leave.set()
        await batch.task
    assert admission.in_flight == 0


async def test_a_batch_larger_than_the_limit_is_admitted_alone() -> None:
    admission = Admission(limit=10, wait_s=0.05)
    async with admission.hold(25):
        assert admission.in_flight == 25
        with pytest.raises(ResourceExhausted):
            async with admission.hold(1):
                pass
