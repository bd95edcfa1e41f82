"""Outages of the servers under the pipeline: clients get retryable statuses, and the pipeline resumes
by itself when the server is back, with every acknowledged reading stored once."""

from __future__ import annotations

import time
import uuid

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from tests.helpers import eventually, past_us, wait_consumed
from tests.target import Target

pytestmark = pytest.mark.local_stack
BASE_US = past_us(1)


def batch(sensor: str, start: int, n: int = 10) -> receiver_service_pb2.PushMetricsRequest:
    metrics = []
    for i in range(start, start + n):
        metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=float(i % 50))
        metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
        metrics.append(metric)
    return receiver_service_pb2.PushMetricsRequest(metrics=metrics)


async def receiver_health(target: Target) -> int:
    async with grpc.aio.insecure_channel(target.services["receiver"]) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


async def test_kafka_down_means_unavailable_and_the_pipeline_resumes(
    receiver: ReceiverServiceStub, target: Target, db: asyncpg.Pool
) -> None:
    sensor = f"outage-{uuid.uuid4().hex[:10]}"
    acked: set[int] = set()
    sent: set[int] = set()

    def times(request: receiver_service_pb2.PushMetricsRequest) -> set[int]:
        return {m.reading_time.ToMicroseconds() for m in request.metrics}

    first = batch(sensor, 0)
    await receiver.PushMetrics(first, timeout=10)
    acked |= times(first)
    with Supervisor(stack_settings.load()) as supervisor:
        supervisor.stop_process("kafka")
        try:
            # Writes are refused as retryable, and the receiver says it is not serving.
            codes, waited, details = [], [], ""
            for attempt in range(20):
                started = time.monotonic()
                refused = batch(sensor, 1000 + 10 * attempt)
                sent |= times(refused)
                try:
                    await receiver.PushMetrics(refused, timeout=30)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    waited.append(time.monotonic() - started)
                    details = error.details() or ""
                    if "does not answer" in details:
                        break
                else:
                    pytest.fail("a write was acknowledged while Kafka was stopped")
            assert set(codes) == {grpc.StatusCode.UNAVAILABLE}, codes
            assert "does not answer" in details, "the receiver never noticed the outage"
            assert await receiver_health(target) == health_pb2.HealthCheckResponse.NOT_SERVING
            print(f"UNAVAILABLE after {waited[0]:.2f} s for the first write, {waited[-1]:.3f} s once known")
        finally:
            supervisor.start_process("kafka")

    # Back by itself: writes succeed again and everything acknowledged is stored exactly once.
    again = batch(sensor, 10)

    async def writes_again() -> None:
        try:
            await receiver.PushMetrics(again, timeout=10)
        except grpc.aio.AioRpcError as error:
            raise AssertionError(error.code()) from error

    await eventually(writes_again, timeout=90)
    acked |= times(again)
    assert await receiver_health(target) == health_pb2.HealthCheckResponse.SERVING
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic, timeout=90)
    rows = await db.fetch("SELECT reading_time FROM readings WHERE sensor_id = $1", sensor)
    stored = [r["reading_time"] for r in rows]
    assert len(stored) == len(set(stored)), "stored once"
    assert acked <= set(stored), "every acknowledged reading is stored"
    # A refused batch was not acknowledged; it may still have reached Kafka (and so be stored).
    assert set(stored) <= acked | sent


async def test_a_stalled_kafka_is_noticed_too(receiver: ReceiverServiceStub, target: Target) -> None:
    # SIGSTOP: connections stay open but nothing answers, as with a network partition.
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    with Supervisor(stack_settings.load()) as supervisor:
        pid = int(supervisor.processes()["kafka"]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:

        async def refused() -> None:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await receiver.PushMetrics(batch(f"stall-{uuid.uuid4().hex[:8]}", 0), timeout=30)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "does not answer" in (error.value.details() or "")

        await eventually(refused, timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)

    async def serving() -> None:
        assert await receiver_health(target) == health_pb2.HealthCheckResponse.SERVING

    await eventually(serving, timeout=30)

    # Each receiver process watches Kafka on its own; the one that answered the health check may
    # have noticed first. Within seconds, every one takes writes again.
    async def accepted() -> None:
        for _ in range(8):  # new connections, which the kernel spreads over the processes
            async with grpc.aio.insecure_channel(target.services["receiver"]) as channel:
                try:
                    await ReceiverServiceStub(channel).PushMetrics(
                        batch(f"stall-{uuid.uuid4().hex[:8]}", 0), timeout=30
                    )
                except grpc.aio.AioRpcError as error:
                    raise AssertionError(error.details()) from error

    await eventually(accepted, timeout=30, what="every receiver process takes writes again")
