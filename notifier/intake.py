"""The notifier's consumer: events from Kafka into the deliveries table, then the offsets committed.

Per round: decode and check every record (what no consumer can use goes to the dead-letter topic,
with why) → queue a delivery per event and matching subscription, in one PostgreSQL transaction →
commit the Kafka offsets → wake the dispatcher. The webhooks are called later, by the dispatcher,
so a slow or failing subscriber never holds back the offsets; a crash before the commit reads the
round again, and queueing it again changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from metrics.v1 import event_pb2
from notifier import instruments, store
from notifier.settings import NotifierSettings
from runtime import kafka, postgres
from runtime.dead_letters import DeadLetters
from runtime.failpoints import Failpoints
from runtime.partitions import FailingPartitions
from runtime.records import Unusable, read_event

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
# After a round failed (PostgreSQL away), the wait before it is read again from the committed offsets.
RETRY_DELAY_S = 1.0
SEVERITIES = frozenset(event_pb2.Severity.values())


class Intake:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        dead_letters: DeadLetters,
        config: NotifierSettings,
        serving: Callable[[bool], Awaitable[None]],
        queued: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._pool = pool
        self._dead_letters = dead_letters
        self._config = config
        self._queued = queued
        self._failing = FailingPartitions(consumer, RETRY_DELAY_S, config.stall_after_s, serving)
        self._failpoint = Failpoints(config.failpoints)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._failing.tick()
            rounds = await self._consumer.getmany(
                timeout_ms=200, max_records=self._config.max_records_per_round
            )
            if rounds:
                await self._round(rounds)

    async def _round(self, rounds: Records) -> None:
        events: list[store.QueuedEvent] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], Unusable]] = []
        for records in rounds.values():
            for record in records:
                try:
                    events.append(queued_event(read_event(record), record.value or b""))
                except Unusable as exc:
                    dead.append((record, exc))
        try:
            if dead:
                await self._dead_letters.send(dead)
            queued = await store.queue(self._pool, events) if events else 0
        except (*postgres.OUTAGE, KafkaError) as exc:
            # Nothing is committed: the round is read again once PostgreSQL (or Kafka) answers.
            for tp in rounds:
                await self._failing.failed(tp, exc)
            return
        instruments.EVENTS.inc(len(events))
        instruments.QUEUED.inc(queued)
        if queued:
            self._queued()
        self._failpoint("notifier.before_commit")
        offsets = {tp: records[-1].offset + 1 for tp, records in rounds.items()}
        await kafka.commit(self._consumer, offsets, "queueing an event again is harmless")
        for tp in offsets:
            await self._failing.succeeded(tp)


def queued_event(event: event_pb2.Event, value: bytes) -> store.QueuedEvent:
    """What queueing needs of a checked event. A severity this notifier does not know (a newer
    producer's) counts as none: it matches the subscriptions without a minimum severity only."""
    return store.QueuedEvent(
        event_id=event.event_id,
        sensor_id=event.sensor_id,
        kind=event.kind,
        severity=event.severity if event.severity in SEVERITIES else 0,
        event=value,
        detect_time_us=event.detect_time.ToMicroseconds(),
    )
