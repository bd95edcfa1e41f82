"""Live events: one Kafka consumer of the events topic per assessor process, fanned out to every
WatchEvents stream.

The feed is the events topic, as the processors raise events, not the database: a read replica
delivers no NOTIFY, and the assessor is to read from one. A watcher gets each event once, possibly
milliseconds before ListEvents finds it (the saver stores it meanwhile).

The consumer is in no group and commits nothing (each assessor process sees every event): it
assigns itself every partition of the topic and starts at their ends. The hub takes subscribers
once those positions are known, and fetches continuously, so an event produced after a watcher got
its response headers reaches that watcher. A broker outage does not end the feed: the consumer keeps
its positions and goes on from them (and no event is raised meanwhile). When the consumer fails (a
position lost, the topic gone), the watchers end with UNAVAILABLE and the hub starts again from the
ends. Partitions added to the topic later are read from the assessor's next start.

A processor that crashes after producing an event produces it again (same event id, same bytes):
the hub remembers the ids of the last RECENT_EVENT_IDS events and passes each on once. A record
that is not a valid metrics.v1.Event is skipped with a warning; dead-lettering it is the saver's job.

Each watcher has a bounded queue: a client that reads too slowly is cut off with RESOURCE_EXHAUSTED
(it can catch up with ListEvents) instead of holding memory or slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

from metrics.v1 import event_pb2
from runtime import kafka
from runtime.errors import ResourceExhausted, ServiceError, Unavailable
from runtime.lifecycle import Stopped, retry_until_stopped
from runtime.records import Unusable, read_event

log = logging.getLogger(__name__)

# A processor's repeat follows the original within its next round (seconds, a few thousand events):
# this many ids cover it many times over, in about 1 MB.
RECENT_EVENT_IDS = 10_000


@dataclass(frozen=True)
class Filter:
    sensor_id: str = ""
    metric_type: str = ""
    kind: int = 0
    # The sensor-id prefixes the watcher's token covers.
    prefixes: tuple[str, ...] = ("",)

    def matches(self, event: event_pb2.Event) -> bool:
        return (
            (not self.sensor_id or event.sensor_id == self.sensor_id)
            and any(event.sensor_id.startswith(p) for p in self.prefixes)
            and (not self.metric_type or event.metric_type == self.metric_type)
            and (not self.kind or event.kind == self.kind)
        )


class Watcher:
    def __init__(self, where: Filter, queue_size: int) -> None:
        self.filter = where
        self._queue: asyncio.Queue[event_pb2.Event | ServiceError] = asyncio.Queue(queue_size + 1)
        self._limit = queue_size
        self._ended = False

    def offer(self, event: event_pb2.Event) -> None:
        if self._ended:
            return
        if self._queue.qsize() >= self._limit:
            self.end(ResourceExhausted(
                f"the client read events too slowly (more than {self._limit} waiting); "
                "reconnect, and catch up with ListEvents"
            ))  # fmt: skip
            return
        self._queue.put_nowait(event)

    def end(self, error: ServiceError) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(error)

    async def next(self) -> event_pb2.Event:
        item = await self._queue.get()
        if isinstance(item, ServiceError):
            raise item
        return item


class RecentIds:
    """The last `size` event ids seen."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """Remembers `event_id`; False if it is among the last `size` already."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class EventHub:
    def __init__(self, settings: kafka.KafkaSettings, queue_size: int = 1_000) -> None:
        self._settings = settings
        self._queue_size = queue_size
        self._watchers: set[Watcher] = set()
        self._recent = RecentIds(RECENT_EVENT_IDS)
        self._live = False
        self._following: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Follows the topic in the background, connecting again after a failure, until stop();
        until it is live, subscribers get UNAVAILABLE (queries do not wait for Kafka)."""
        self._following = asyncio.get_running_loop().create_task(self._follow_until_stopped())

    def end_all_for_shutdown(self) -> None:
        self.end_all(Unavailable("the assessor is shutting down; reconnect"))

    async def stop(self) -> None:
        self._stopping.set()
        self.end_all_for_shutdown()
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following

    def end_all(self, error: ServiceError) -> None:
        for watcher in list(self._watchers):
            watcher.end(error)

    @asynccontextmanager
    async def subscribe(self, where: Filter) -> AsyncIterator[Watcher]:
        if not self._live:
            raise Unavailable("the live event feed is reconnecting; try again shortly")
        watcher = Watcher(where, self._queue_size)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    async def _follow_until_stopped(self) -> None:
        with contextlib.suppress(Stopped):
            await retry_until_stopped("Kafka (live events)", self._follow, self._stopping, first_delay=0.5)

    async def _follow(self) -> None:
        """Reads the topic from its ends and passes the events on; returns only by failing."""
        consumer = AIOKafkaConsumer(
            **kafka.client_options(self._settings),
            client_id="assessor-watch",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # A lost position is a failure (the watchers are told), never a silent jump.
            auto_offset_reset="none",
        )
        try:
            await consumer.start()
            await self._start_at_ends(consumer)
            self._live = True
            log.info("live event feed: following %s", kafka.describe(list(consumer.assignment())))
            while True:
                for records in (await consumer.getmany(timeout_ms=1_000)).values():
                    for record in records:
                        self._pass_on(record)
        finally:
            if self._live and not self._stopping.is_set():
                log.warning("the live event feed failed; ending %d watch stream(s)", len(self._watchers))
                self.end_all(Unavailable("the live event feed was interrupted; reconnect"))
            self._live = False
            await consumer.stop()

    async def _start_at_ends(self, consumer: AIOKafkaConsumer) -> None:
        partitions = await self._partitions()
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)  # known before the first subscriber

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the events topic (the consumer knows only the topics it follows)."""
        topic = self._settings.events_topic
        admin = AIOKafkaAdminClient(**kafka.client_options(self._settings), request_timeout_ms=10_000)
        await admin.start()
        try:
            (description,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if description["error_code"] or not description["partitions"]:
            raise UnknownTopicOrPartitionError(f"no topic {topic}")
        return [TopicPartition(topic, p["partition"]) for p in description["partitions"]]

    def _pass_on(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = read_event(record)
        except Unusable as exc:
            log.warning("%s[%d]@%d: skipped, %s", record.topic, record.partition, record.offset, exc)
            return
        if not self._recent.first_time(event.event_id):
            return
        for watcher in list(self._watchers):
            if watcher.filter.matches(event):
                watcher.offer(event)
