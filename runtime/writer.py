"""Writes validated readings to the "metrics" topic and tells each caller when Kafka has all of its:
the one way into Kafka of every door (the receiver's gRPC and HTTP, the MQTT bridge)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2
from prometheus_client import Histogram

from metrics.v1 import metric_pb2
from runtime import kafka
from runtime.errors import InvalidArgument, ServiceError, Unavailable, Violation

log = logging.getLogger(__name__)

HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)
# A lane lingers only while its next record is smaller than this (about 80 readings).
LINGER_BELOW_BYTES = 4096


class ProducerSlot:
    """The receiver's producer, replaced by a fresh one when Kafka stops taking its sequence numbers.

    After a broker restart an idempotent producer can be refused for good (OutOfOrderSequenceNumber
    and its kin): every later write would fail until the receiver restarted. A new producer gets a
    new producer id and writes again; the refused batch was not written and its client resends it.
    """

    BROKEN = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)

    def __init__(self, make: Callable[[], AIOKafkaProducer]) -> None:
        self._make = make
        self.current = make()
        self._lock = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.current.start()

    async def replace(self, broken: AIOKafkaProducer) -> None:
        async with self._lock:
            if self.current is not broken:
                return  # another write replaced it already
            fresh = self._make()
            await fresh.start()
            self.current = fresh
            log.warning("Kafka refused this producer's sequence numbers; writing with a new producer")
            retiring = asyncio.create_task(broken.stop())
            self._retired.add(retiring)
            retiring.add_done_callback(self._retired.discard)

    async def stop(self) -> None:
        await self.current.stop()


class KafkaWatch:
    """Whether Kafka answers, from a metadata request every `interval_s`.

    While it does not, writes fail at once with UNAVAILABLE instead of each waiting out its ack
    timeout, and writes already waiting are told so too: clients learn of an outage within about a
    second and resend, and the receiver holds no pile of doomed work.
    """

    def __init__(self, producer: ProducerSlot, interval_s: float = 0.25, timeout_s: float = 1.0) -> None:
        self._producer = producer
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._down = False
        self._changed: list[Callable[[bool], Awaitable[None]]] = []

    @property
    def down(self) -> bool:
        return self._down

    def on_change(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        """`callback(up)` runs when Kafka goes down or comes back."""
        self._changed.append(callback)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._producer.current.client.fetch_all_metadata()
            except (TimeoutError, KafkaError, OSError) as exc:
                failures += 1
                if failures == 2 and not self.down:
                    log.warning("Kafka does not answer (%s); writes fail with UNAVAILABLE until it does", exc)
                    await self._set(up=False)
            else:
                failures = 0
                if self.down:
                    log.info("Kafka answers again")
                    await self._set(up=True)
            await asyncio.sleep(self._interval_s)

    async def _set(self, up: bool) -> None:
        self._down = not up
        for callback in self._changed:
            await callback(up)


class MetricsWriter:
    """Writes readings to the metrics topic, coalescing the readings of concurrent calls.

    Each partition has a lane: at most one record of it is in Kafka's hands at a time, and what
    arrives meanwhile joins the next record, up to `max_record_bytes` and `max_record_readings`.
    So a thousand devices sending one reading each cost Kafka, the processor and the saver a few
    large records, not a thousand small ones, and the wait for a record adapts to Kafka's round
    trip. A record holds readings of any sensors whose ids hash to its partition (murmur2, as
    Kafka's default partitioner), each sensor's in the order received; its key is the sensor id
    when it holds one sensor, else none.
    """

    def __init__(
        self,
        producer: ProducerSlot,
        topic: str,
        watch: KafkaWatch,
        ack_timeout_s: float,
        produce_seconds: Histogram,
        max_record_bytes: int = 1024 * 1024,
        max_record_readings: int = 10_000,
        linger_s: float = 0.0,
    ) -> None:
        self._producer = producer
        # The door's own series: from a record's send to Kafka's acknowledgement.
        self._produce_seconds = produce_seconds
        self._topic = topic
        self._watch = watch
        self._ack_timeout_s = ack_timeout_s
        self.max_record_bytes = max_record_bytes
        self.max_record_readings = max_record_readings
        self.linger_s = linger_s
        self._lanes: dict[int, _Lane] = {}
        self._hashes: dict[str, int] = {}
        watch.on_change(self._kafka_changed)

    def submit(
        self, metrics: Sequence[metric_pb2.Metric], sensors: set[str], encoded: bytes | None = None
    ) -> asyncio.Future[Any]:
        """Queues the readings for Kafka without waiting: the future is done once every reading is
        durably in Kafka, or failed with Unavailable (or InvalidArgument for a batch larger than
        Kafka takes). Raises Unavailable at once while Kafka does not answer.

        `sensors` are the batch's sensor ids; `encoded`, if given, is the batch already serialized
        as a message whose field 1 holds the readings (the wire format of a MetricBatch).
        """
        if self._watch.down:
            raise Unavailable("Kafka does not answer; nothing is acknowledged, send again later")
        return self.submit_batches(sensor_batches(metrics, sensors, encoded))

    def submit_batches(self, batches: list[tuple[str, bytes, int]]) -> asyncio.Future[Any]:
        """As submit, for readings already encoded: (sensor id, MetricBatch bytes, readings) each."""
        if self._watch.down:
            raise Unavailable("Kafka does not answer; nothing is acknowledged, send again later")
        partitions = self._producer.current.client.cluster.partitions_for_topic(self._topic)
        if not partitions:  # a new producer learns the topic's partitions first
            return asyncio.ensure_future(self._submit_when_partitioned(batches))
        count = len(partitions)
        acks = [
            self._lane(self._hash(sensor) % count).add(sensor, value, readings)
            for sensor, value, readings in batches
        ]
        return acks[0] if len(acks) == 1 else asyncio.gather(*acks)  # none: done at once

    async def _submit_when_partitioned(self, batches: list[tuple[str, bytes, int]]) -> None:
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                await self._producer.current.partitions_for(self._topic)
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable(f"Kafka did not say how {self._topic} is partitioned; send again") from exc
        await self.submit_batches(batches)

    def _hash(self, sensor: str) -> int:
        """murmur2 of the id as Kafka's default partitioner takes it (pure Python: kept per id)."""
        found = self._hashes.get(sensor)
        if found is None:
            if len(self._hashes) >= 1_000_000:
                self._hashes.clear()
            found = self._hashes[sensor] = murmur2(sensor.encode()) & 0x7FFFFFFF
        return found

    def _lane(self, partition: int) -> _Lane:
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _Lane(self, partition)
        return lane

    async def _kafka_changed(self, up: bool) -> None:
        if not up:
            error = Unavailable("Kafka stopped answering; nothing is acknowledged, send again later")
            for lane in self._lanes.values():
                lane.fail_all(error)

    async def _send(self, partition: int, record: _Record) -> None:
        """Produces one record and settles its callers: acknowledged, or told why not."""
        producer = self._producer.current
        value = record.chunks[0] if len(record.chunks) == 1 else b"".join(record.chunks)
        key = record.sensor.encode() if record.sensor is not None else None
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                ack = await producer.send(self._topic, value, key=key, partition=partition, headers=HEADERS)
                await ack
        except Exception as exc:  # noqa: BLE001 - every failure is told to the callers, as a status
            record.settle(await self._error(exc, producer))
        else:
            self._produce_seconds.observe(time.perf_counter() - began)
            record.settle(None)

    async def _error(self, exc: Exception, producer: AIOKafkaProducer) -> Exception:
        if isinstance(exc, TimeoutError):
            return Unavailable(
                f"Kafka did not acknowledge within {self._ack_timeout_s:g} s; "
                "nothing is acknowledged, send again"
            )
        if isinstance(exc, ProducerSlot.BROKEN):
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await self._producer.replace(producer)
            return Unavailable("Kafka refused this receiver's producer; nothing is acknowledged, send again")
        if isinstance(exc, MessageSizeTooLargeError):
            too_large = "the batch is larger than Kafka takes in one record"
            return InvalidArgument([Violation("metrics", too_large)])
        if isinstance(exc, KafkaError):
            log.warning("write to %s failed: %r", self._topic, exc)
            if not exc.retriable:
                return ServiceError(f"Kafka refused the write ({type(exc).__name__})")
            return Unavailable(f"Kafka refused the write ({type(exc).__name__}); send again")
        log.error("write to %s failed", self._topic, exc_info=exc)
        return ServiceError("the write to Kafka failed; see the receiver's log")


class _Record:
    """Readings bound for one partition, and the calls that wait for Kafka to acknowledge them."""

    __slots__ = ("chunks", "readings", "sensor", "size", "waiters")

    def __init__(self, sensor: str) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.readings = 0
        # The one sensor of the record, or None once it holds several.
        self.sensor: str | None = sensor
        self.waiters: list[asyncio.Future[None]] = []

    def settle(self, error: Exception | None) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # a caller that went away cancelled its own
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        self.waiters.clear()


class _Lane:
    """One partition's records, sent one at a time in order (see MetricsWriter)."""

    def __init__(self, writer: MetricsWriter, partition: int) -> None:
        self._writer = writer
        self._partition = partition
        self._queue: collections.deque[_Record] = collections.deque()
        self._sending: asyncio.Task[None] | None = None
        self._in_flight: _Record | None = None

    def add(self, sensor: str, value: bytes, readings: int) -> asyncio.Future[None]:
        writer = self._writer
        record = self._queue[-1] if self._queue else None
        if (
            record is None
            or record.size + len(value) > writer.max_record_bytes
            or record.readings + readings > writer.max_record_readings
        ):
            record = _Record(sensor)
            self._queue.append(record)
        elif record.sensor != sensor:
            record.sensor = None
        record.chunks.append(value)
        record.size += len(value)
        record.readings += readings
        ack = asyncio.get_running_loop().create_future()
        record.waiters.append(ack)
        if self._sending is None:
            self._sending = asyncio.create_task(self._drain())
        return ack

    def fail_all(self, error: Exception) -> None:
        """Tells every caller of this lane that its readings are not acknowledged; drops what waits."""
        if self._in_flight is not None:
            self._in_flight.settle(error)
        while self._queue:
            self._queue.popleft().settle(error)

    async def _drain(self) -> None:
        try:
            if self._writer.linger_s and self._queue[0].size < LINGER_BELOW_BYTES:
                # An idle lane waits a moment for more small calls: at a few per partition per
                # millisecond, one record instead of several. A large batch goes at once.
                await asyncio.sleep(self._writer.linger_s)
            while self._queue:
                self._in_flight = self._queue.popleft()
                await self._writer._send(self._partition, self._in_flight)
        finally:
            self._in_flight = None
            self._sending = None


def sensor_batches(
    metrics: Sequence[metric_pb2.Metric], sensors: set[str] | None = None, encoded: bytes | None = None
) -> list[tuple[str, bytes, int]]:
    """(sensor id, MetricBatch bytes, readings) per sensor, in order of first appearance, each
    sensor's readings in batch order. MetricBatch encodings concatenate into one MetricBatch."""
    if sensors is None:
        sensors = {m.sensor_id for m in metrics}
    if len(sensors) == 1:
        (sensor,) = sensors
        value = (
            encoded if encoded is not None else metric_pb2.MetricBatch(metrics=metrics).SerializeToString()
        )
        return [(sensor, value, len(metrics))]
    by_sensor: dict[str, list[metric_pb2.Metric]] = {}
    for m in metrics:
        by_sensor.setdefault(m.sensor_id, []).append(m)
    return [
        (sensor, metric_pb2.MetricBatch(metrics=group).SerializeToString(), len(group))
        for sensor, group in by_sensor.items()
    ]
