"""How much a receiver process takes on at once, so that an overload costs neither memory nor time."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator

from receiver.instruments import ADMISSION_WAIT_SECONDS
from runtime.errors import ResourceExhausted


class Admission:
    """Bounds the readings a receiver process holds over all clients: at most `limit` in flight
    (accepted, not yet acknowledged by Kafka) and at most `limit` more waiting up to `wait_s` for
    room, first come first served. A request beyond both is refused at once.

    The common case costs no await: `try_acquire` and `release` are plain calls; only a request
    that must wait for room awaits `acquire`.
    """

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.in_flight = 0
        self.waiting = 0
        # Requests waiting for room, in order: (readings, readings counted while waiting, admitted).
        self._queue: collections.deque[tuple[int, int, asyncio.Future[None]]] = collections.deque()

    def try_acquire(self, n: int) -> bool:
        """Takes room for `n` readings if there is room now and nobody waits before this request."""
        # A batch larger than the whole limit is admitted alone rather than never.
        if not self.waiting and self.in_flight + min(n, self.limit) <= self.limit:
            self.in_flight += n
            return True
        return False

    async def acquire(self, n: int) -> None:
        """Takes room for `n` readings, waiting up to `wait_s` for it; raises ResourceExhausted."""
        if self.try_acquire(n):
            return
        need = min(n, self.limit)
        if self.waiting + need > self.limit:
            raise self._exhausted()
        admitted = asyncio.get_running_loop().create_future()
        self._queue.append((n, need, admitted))
        self.waiting += need
        began = time.perf_counter()
        try:
            await asyncio.wait_for(admitted, self.wait_s)
        except BaseException as exc:
            ADMISSION_WAIT_SECONDS.observe(time.perf_counter() - began)
            if admitted.cancelled():  # timed out, or the caller went away while waiting
                self.waiting -= need
                self._admit_waiting()  # the next in line may fit, now this one is gone
            else:  # admitted just as the caller went away: give the room back
                self.release(n)
            if isinstance(exc, TimeoutError):
                raise self._exhausted() from None
            raise
        ADMISSION_WAIT_SECONDS.observe(time.perf_counter() - began)

    def release(self, n: int) -> None:
        self.in_flight -= n
        if self._queue:
            self._admit_waiting()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)

    def full(self) -> ResourceExhausted | None:
        """The error for a request that comes while there is no room, not even to wait."""
        return self._exhausted() if self.waiting >= self.limit else None

    def _admit_waiting(self) -> None:
        while self._queue:
            n, need, admitted = self._queue[0]
            if admitted.done():  # gave up waiting
                self._queue.popleft()
                continue
            if self.in_flight + need > self.limit:
                return
            self._queue.popleft()
            self.waiting -= need
            self.in_flight += n
            admitted.set_result(None)

    def _exhausted(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"the receiver has {self.in_flight} readings in flight and {self.waiting} waiting "
            f"(limit {self.limit} each); retry later"
        )
