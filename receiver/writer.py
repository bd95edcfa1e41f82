"""Writes validated readings to the "metrics" topic and waits until Kafka acknowledged all of them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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

from metrics.v1 import metric_pb2
from runtime import kafka
from runtime.errors import InvalidArgument, ResourceExhausted, ServiceError, Unavailable, Violation

log = logging.getLogger(__name__)

HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)


class Admission:
    """Bounds the readings a receiver holds over all clients: at most `limit` in flight (accepted,
    not yet acknowledged by Kafka) and at most `limit` more waiting up to `wait_s` for room, first
    come first served. A request beyond both is refused at once, so an overload costs neither
    memory nor queueing time."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.in_flight = 0
        self.waiting = 0
        self._queue: collections.deque[object] = collections.deque()
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        await self._acquire(n)
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= n
                self._changed.notify_all()

    async def _acquire(self, n: int) -> None:
        # A batch larger than the whole limit is admitted alone rather than never.
        need = min(n, self.limit)
        if not self.waiting and self.in_flight + need <= self.limit:
            self.in_flight += n
            return
        if self.waiting + need > self.limit:
            raise self._exhausted()
        self.waiting += need
        turn = object()
        self._queue.append(turn)
        try:
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(
                            lambda: self._queue[0] is turn and self.in_flight + need <= self.limit
                        ),
                        self.wait_s,
                    )
                    self.in_flight += n
                finally:
                    self.waiting -= need
                    self._queue.remove(turn)
                    self._changed.notify_all()  # the next in line may fit, now this one is in or gone
        except TimeoutError:
            raise self._exhausted() from None

    def full(self) -> ResourceExhausted | None:
        """The error for a request that comes while there is no room, not even to wait."""
        return self._exhausted() if self.waiting >= self.limit else None

    def _exhausted(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"the receiver has {self.in_flight} readings in flight and {self.waiting} waiting "
            f"(limit {self.limit} each); retry later"
        )


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
        self._down = asyncio.Event()
        self._changed: list[Callable[[bool], Awaitable[None]]] = []

    @property
    def down(self) -> bool:
        return self._down.is_set()

    def on_change(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        """`callback(up)` runs when Kafka goes down or comes back."""
        self._changed.append(callback)

    async def wait_down(self) -> None:
        await self._down.wait()

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
        if up:
            self._down.clear()
        else:
            self._down.set()
        for callback in self._changed:
            await callback(up)


class MetricsWriter:
    """One Kafka record per sensor per batch: key = sensor_id, value = MetricBatch of its readings."""

    def __init__(
        self,
        producer: ProducerSlot,
        topic: str,
        watch: KafkaWatch,
        ack_timeout_s: float,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._watch = watch
        self._ack_timeout_s = ack_timeout_s

    async def write(
        self, metrics: Sequence[metric_pb2.Metric], sensors: set[str], encoded: bytes | None = None
    ) -> int:
        """Returns once every reading is durably in Kafka; raises Unavailable.

        `sensors` are the batch's sensor ids; `encoded`, if given, is the batch already serialized
        as a message whose field 1 holds the readings (the wire format of a MetricBatch).
        """
        if self._watch.down:
            raise Unavailable("Kafka does not answer; nothing is acknowledged, send again later")
        producer = self._producer.current
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                acks = [
                    await producer.send(self._topic, value, key=key, headers=HEADERS)
                    for key, value in records(metrics, sensors, encoded)
                ]
                await self._acknowledged(acks)
        except TimeoutError:
            raise Unavailable(
                f"Kafka did not acknowledge within {self._ack_timeout_s:g} s; "
                "nothing is acknowledged, send again"
            ) from None
        except ProducerSlot.BROKEN as exc:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await self._producer.replace(producer)
            raise Unavailable(
                "Kafka refused this receiver's producer; nothing is acknowledged, send again"
            ) from exc
        except MessageSizeTooLargeError as exc:
            raise InvalidArgument(
                [Violation("metrics", "the batch is larger than Kafka takes in one record")]
            ) from exc
        except KafkaError as exc:
            log.warning("write to %s failed: %r", self._topic, exc)
            if not exc.retriable:
                raise ServiceError(f"Kafka refused the write ({type(exc).__name__})") from exc
            raise Unavailable(f"Kafka refused the write ({type(exc).__name__}); send again") from exc
        return len(metrics)

    async def _acknowledged(self, acks: list[asyncio.Future[Any]]) -> None:
        """Waits for Kafka's acknowledgements, or raises Unavailable as soon as Kafka stops answering."""
        gathered = asyncio.gather(*acks)
        outage = asyncio.ensure_future(self._watch.wait_down())
        try:
            await asyncio.wait((gathered, outage), return_when=asyncio.FIRST_COMPLETED)
        finally:
            outage.cancel()
        if not gathered.done():
            # The records may still reach Kafka later; the client is told they were not acknowledged.
            gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise Unavailable("Kafka stopped answering; nothing is acknowledged, send again later")
        gathered.result()


def records(
    metrics: Sequence[metric_pb2.Metric], sensors: set[str] | None = None, encoded: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    """(key, value) per sensor, in order of first appearance, each sensor's readings in batch order."""
    if sensors is None:
        sensors = {m.sensor_id for m in metrics}
    if len(sensors) == 1:
        (sensor,) = sensors
        value = (
            encoded if encoded is not None else metric_pb2.MetricBatch(metrics=metrics).SerializeToString()
        )
        return [(sensor.encode(), value)]
    by_sensor: dict[str, list[metric_pb2.Metric]] = {}
    for m in metrics:
        by_sensor.setdefault(m.sensor_id, []).append(m)
    return [
        (sensor.encode(), metric_pb2.MetricBatch(metrics=group).SerializeToString())
        for sensor, group in by_sensor.items()
    ]
