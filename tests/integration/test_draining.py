"""How a receiver leaves (make upgrade, docs/operations/upgrades.md): SIGUSR1 drains it, NOT_SERVING
while it still answers; SIGTERM ends its streams at a batch boundary, what it read acknowledged and
in Kafka, the rest refused with UNAVAILABLE for the client to send again. A private receiver with
two workers (the parent passes the signals on), on private topics."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from tests.helpers import eventually, read_topic
from tests.services import (
    Topics,
    free_port,
    service_env,
    serving,
    start_service,
    stop_service,
)
from tests.target import Target


@dataclass
class Receiver:
    process: asyncio.subprocess.Process
    address: str
    channel: grpc.aio.Channel
    log: Path


@pytest.fixture
async def receiver(target: Target, topics: Topics, tmp_path: Path) -> AsyncIterator[Receiver]:
    port = free_port()
    own = {"METRICS_RECEIVER_GRPC_PORT": str(port), "METRICS_RECEIVER_WORKERS": "2"}
    log = tmp_path / "receiver.log"
    process = await start_service("receiver", service_env(target, topics, "receiver", own), log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
            yield Receiver(process, f"127.0.0.1:{port}", channel, log)
    finally:
        if process.returncode is None:
            await stop_service(process)


def batch(sensor: str, first: int, n: int = 5) -> list[metric_pb2.Metric]:
    return [
        metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=float(first + i))
        for i in range(n)
    ]


async def test_a_drained_receiver_reports_not_serving_and_still_answers(receiver: Receiver) -> None:
    process, channel, log = receiver.process, receiver.channel, receiver.log
    process.send_signal(signal.SIGUSR1)
    health = health_pb2_grpc.HealthStub(channel)

    async def not_serving() -> None:
        # Each worker answers on its own connection: every new channel must hear NOT_SERVING.
        for _ in range(4):
            async with grpc.aio.insecure_channel(receiver.address) as fresh:
                reply = await health_pb2_grpc.HealthStub(fresh).Check(health_pb2.HealthCheckRequest())
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving, timeout=10, what="both workers NOT_SERVING")
    assert (
        await health.Check(health_pb2.HealthCheckRequest())
    ).status == health_pb2.HealthCheckResponse.NOT_SERVING
    pushed = await ReceiverServiceStub(channel).PushMetrics(
        receiver_service_pb2.PushMetricsRequest(metrics=batch("drained-1", 0))
    )
    assert pushed.accepted_count == 5
    assert await stop_service(process) == 0, log.read_text()[-3000:]


async def test_a_stopping_receiver_ends_its_streams_with_what_it_read_acknowledged(
    receiver: Receiver, target: Target, topics: Topics
) -> None:
    process, channel, log = receiver.process, receiver.channel, receiver.log
    stub = ReceiverServiceStub(channel)
    held_open = asyncio.Event()  # never set: the clients keep their streams open

    async def sync_batches() -> AsyncIterator[receiver_service_pb2.SyncMetricsRequest]:
        for n in range(3):
            yield receiver_service_pb2.SyncMetricsRequest(sequence=n, metrics=batch("sync-1", n * 5))
        await held_open.wait()

    async def stream_batches() -> AsyncIterator[receiver_service_pb2.StreamMetricsRequest]:
        for n in range(2):
            yield receiver_service_pb2.StreamMetricsRequest(metrics=batch("stream-1", n * 5))
        await held_open.wait()

    sync = stub.SyncMetrics(sync_batches())
    acks = [await sync.read() for _ in range(3)]
    assert [(a.sequence, a.accepted_count) for a in acks] == [(0, 5), (1, 5), (2, 5)]
    streamed = stub.StreamMetrics(stream_batches())

    async def both_stream_batches_in_kafka() -> None:
        records = await read_topic(target.kafka_bootstrap_servers, topics.metrics, {})
        sensors = [m.sensor_id for r in records for m in metric_pb2.MetricBatch.FromString(r.value).metrics]
        assert sensors.count("stream-1") == 10, sensors

    await eventually(both_stream_batches_in_kafka, timeout=10, what="the streamed batches in Kafka")

    process.terminate()
    with pytest.raises(grpc.aio.AioRpcError) as sync_end:
        await sync.read()
    assert sync_end.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the receiver is stopping: reconnect" in (sync_end.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as stream_end:
        await streamed
    assert stream_end.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "2 batches of this stream are written; send the rest again" in (stream_end.value.details() or "")
    # It did not wait out its grace period for the open streams: they ended at once.
    assert await asyncio.wait_for(process.wait(), 5) == 0, log.read_text()[-3000:]
