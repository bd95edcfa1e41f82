"""Writes validated readings to the "metrics" topic and waits until Kafka acknowledged all of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from metrics.v1 import metric_pb2
from runtime import kafka
from runtime.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)


class Admission:
    """Bounds the readings in flight (accepted, not yet acknowledged by Kafka) over all clients."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        # A batch larger than the whole limit is admitted alone rather than never.
        need = min(n, self.limit)
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.in_flight + need <= self.limit), self.wait_s
                )
            except TimeoutError:
                raise ResourceExhausted(
                    f"the receiver has {self.in_flight} readings in flight (limit {self.limit}); retry later"
                ) from None
            self.in_flight += n

    async def release(self, n: int) -> None:
        async with self._changed:
            self.in_flight -= n
            self._changed.notify_all()


class MetricsWriter:
    """One Kafka record per sensor per batch: key = sensor_id, value = MetricBatch of its readings."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, admission: Admission, ack_timeout_s: float
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._admission = admission
        self._ack_timeout_s = ack_timeout_s

    async def write(
        self, metrics: Sequence[metric_pb2.Metric], sensors: set[str], encoded: bytes | None = None
    ) -> int:
        """Returns once every reading is durably in Kafka; raises Unavailable or ResourceExhausted.

        `sensors` are the batch's sensor ids; `encoded`, if given, is the batch already serialized
        as a message whose field 1 holds the readings (the wire format of a MetricBatch).
        """
        n = len(metrics)
        await self._admission.acquire(n)
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                acks = [
                    await self._producer.send(self._topic, value, key=key, headers=HEADERS)
                    for key, value in records(metrics, sensors, encoded)
                ]
                await asyncio.gather(*acks)
        except TimeoutError:
            raise Unavailable(
                f"Kafka did not acknowledge within {self._ack_timeout_s:g} s; "
                "nothing is acknowledged, send again"
            ) from None
        except KafkaError as exc:
            log.warning("write to %s failed: %r", self._topic, exc)
            raise Unavailable(f"Kafka refused the write ({type(exc).__name__}); send again") from exc
        finally:
            await self._admission.release(n)
        return n


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
