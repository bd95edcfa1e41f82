"""StreamMetrics writes a stream's batches without waiting for each one's acknowledgement, at most
STREAM_WINDOW at once, and answers as its contract says when one of them fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest

from metrics.v1 import metric_pb2
from metrics.v1 import receiver_service_pb2 as rs
from receiver.admission import Admission
from receiver.service import STREAM_WINDOW, Receiver
from runtime.devices import Devices
from runtime.errors import Unavailable
from runtime.validation import ArrivalClock, Limits
from runtime.writer import MetricsWriter
from tests.helpers import eventually


class Writer:
    """Kafka as the test decides: each submitted batch's future, settled by the test."""

    def __init__(self) -> None:
        self.submitted: list[tuple[set[str], asyncio.Future[None]]] = []

    def submit(self, metrics: Any, sensors: set[str], encoded: bytes | None = None) -> asyncio.Future[None]:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submitted.append((sensors, written))
        return written


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()  # the trusted inside: no caller to authorize

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = None) -> None:
        raise Aborted(code, details)


def receiver(writer: Writer, in_flight: int = 1_000_000, wait_s: float = 1.0) -> Receiver:
    return Receiver(
        cast(MetricsWriter, writer),
        Admission(in_flight, wait_s),
        Limits(max_batch_readings=100, max_future_skew_s=300.0),
        ArrivalClock(),
        cast(Devices, None),  # neither strict nor called by a device: never asked
    )


def batch(sensor: str, value: float = 1.0) -> rs.StreamMetricsRequest:
    return rs.StreamMetricsRequest(
        metrics=[metric_pb2.Metric(sensor_id=sensor, metric_type="t", value=value)]
    )


async def stream(batches: list[rs.StreamMetricsRequest]) -> AsyncIterator[rs.StreamMetricsRequest]:
    for request in batches:
        yield request


async def until(condition: Any) -> None:
    async def check() -> None:
        assert condition()

    await eventually(check, timeout=5)


async def test_batches_are_written_before_earlier_ones_are_acknowledged() -> None:
    writer = Writer()
    call = asyncio.create_task(
        receiver(writer).StreamMetrics(stream([batch(f"s-{i}") for i in range(5)]), Context())
    )
    await until(lambda: len(writer.submitted) == 5)  # none acknowledged yet: all five submitted
    assert not call.done()
    for _, written in reversed(writer.submitted):  # Kafka answers out of order
        written.set_result(None)
    reply = await call
    assert (reply.accepted_count, reply.batch_count) == (5, 5)


async def test_a_stream_has_at_most_its_window_waiting_for_kafka() -> None:
    writer = Writer()
    call = asyncio.create_task(
        receiver(writer).StreamMetrics(stream([batch(f"s-{i}") for i in range(STREAM_WINDOW + 3)]), Context())
    )
    await until(lambda: len(writer.submitted) == STREAM_WINDOW)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(writer.submitted) == STREAM_WINDOW, "read past the window"
    writer.submitted[0][1].set_result(None)  # the first acknowledged: room for one more
    await until(lambda: len(writer.submitted) == STREAM_WINDOW + 1)
    while not call.done():
        for _, written in writer.submitted:
            if not written.done():
                written.set_result(None)
        await asyncio.sleep(0)
    assert (await call).batch_count == STREAM_WINDOW + 3


async def test_kafka_failing_a_batch_ends_the_stream_with_its_error_after_those_before_it() -> None:
    writer = Writer()
    call = asyncio.create_task(
        receiver(writer).StreamMetrics(stream([batch(f"s-{i}") for i in range(4)]), Context())
    )
    await until(lambda: len(writer.submitted) == 4)
    first, second, third, fourth = (written for _, written in writer.submitted)
    third.set_result(None)
    second.set_exception(Unavailable("Kafka did not acknowledge in time"))
    fourth.set_result(None)
    assert not call.done(), "answered before the first batch was acknowledged"
    first.set_result(None)
    with pytest.raises(Aborted) as aborted:
        await call
    assert aborted.value.code == grpc.StatusCode.UNAVAILABLE
    assert "Kafka did not acknowledge" in aborted.value.details


async def test_a_bad_batch_stops_the_reading_and_names_its_index() -> None:
    writer = Writer()
    bad = rs.StreamMetricsRequest(metrics=[metric_pb2.Metric(sensor_id="", metric_type="t", value=1.0)])
    call = asyncio.create_task(
        receiver(writer).StreamMetrics(stream([batch("s-0"), batch("s-1"), bad, batch("s-3")]), Context())
    )
    await until(lambda: len(writer.submitted) == 2)
    for _, written in writer.submitted:
        written.set_result(None)
    with pytest.raises(Aborted) as aborted:
        await call
    assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "[2].metrics[0].sensor_id" in aborted.value.details
    assert [sensors for sensors, _ in writer.submitted] == [{"s-0"}, {"s-1"}], (
        "a batch after the bad one was written"
    )


async def test_a_batch_without_room_is_refused_after_the_admission_wait() -> None:
    # Kafka holds the first batch; the second waits for room, is refused when the admission's wait
    # is over, and the stream ends with RESOURCE_EXHAUSTED once the batch before it is written.
    writer = Writer()
    service = receiver(writer, in_flight=1, wait_s=0.05)
    call = asyncio.create_task(service.StreamMetrics(stream([batch("s-0"), batch("s-1")]), Context()))
    await until(lambda: service._admission.waiting == 1)
    await until(lambda: service._admission.waiting == 0)  # gave up waiting
    assert len(writer.submitted) == 1
    writer.submitted[0][1].set_result(None)
    with pytest.raises(Aborted) as aborted:
        await call
    assert aborted.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
