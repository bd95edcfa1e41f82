"""Partitions whose work failed: each is retried on its own, so one never holds back the others.

A consumer's round covers several partitions. When one partition's work fails (a server it needs
is down, data a script refuses), only that partition is paused and read again from its committed
offset after a delay; the others go on and are committed. A partition that makes no progress for
longer than `stall_after_s` while records wait is reported once in the log and in the consumer's
health (NOT_SERVING), and again once when it flows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


class FailingPartitions:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        retry_delay_s: float,
        stall_after_s: float,
        serving: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._consumer = consumer
        self._retry_delay_s = retry_delay_s
        self._stall_after_s = stall_after_s
        self._serving = serving
        self._failing_since: dict[TopicPartition, float] = {}
        self._retry_at: dict[TopicPartition, float] = {}
        self._stalled: set[TopicPartition] = set()

    @property
    def stalled(self) -> frozenset[TopicPartition]:
        return frozenset(self._stalled)

    async def failed(self, tp: TopicPartition, exc: BaseException) -> None:
        """Pauses `tp` and moves it back to its committed offset, to be read again after the delay."""
        now = time.monotonic()
        if tp not in self._failing_since:
            self._failing_since[tp] = now
            log.error(
                "%s[%d]: round failed, reading it again every %g s until it succeeds: %s: %s",
                tp.topic, tp.partition, self._retry_delay_s, type(exc).__name__, exc,
            )  # fmt: skip
        self._retry_at[tp] = now + self._retry_delay_s
        if tp not in self._consumer.assignment():
            return  # moved to another member meanwhile: it reads from the commit anyway
        self._consumer.pause(tp)
        offset = await self._consumer.committed(tp)
        if offset is None:
            await self._consumer.seek_to_beginning(tp)  # nothing committed yet: where reading starts
        else:
            self._consumer.seek(tp, offset)

    async def succeeded(self, tp: TopicPartition) -> None:
        since = self._failing_since.pop(tp, None)
        if since is not None:
            log.info(
                "%s[%d]: rounds succeed again after %.0f s", tp.topic, tp.partition, time.monotonic() - since
            )
            self._stalled.discard(tp)
            if not self._stalled:
                await self._serving(True)

    async def tick(self) -> None:
        """Resumes the partitions whose delay is over; reports the ones stalled too long."""
        now = time.monotonic()
        assigned = self._consumer.assignment()
        was_stalled = bool(self._stalled)
        for tp in [tp for tp, at in self._retry_at.items() if at <= now]:
            del self._retry_at[tp]
            if tp in assigned:
                self._consumer.resume(tp)
        for tp, since in list(self._failing_since.items()):
            if tp not in assigned:  # another member has it now
                del self._failing_since[tp]
                self._stalled.discard(tp)
            elif tp not in self._stalled and now - since >= self._stall_after_s:
                self._stalled.add(tp)
                log.error(
                    "%s[%d]: no progress for %.0f s while records wait; reporting NOT_SERVING until it flows",
                    tp.topic, tp.partition, now - since,
                )  # fmt: skip
                await self._serving(False)
        if was_stalled and not self._stalled:
            await self._serving(True)
