"""Strict mode (METRICS_REQUIRE_REGISTERED_DEVICES): a receiver that requires registered devices
refuses the readings of a sensor that no enabled device covers, naming the sensor, and writes
nothing of the batch; it takes them once a device covering the sensor is registered, and refuses
them again once the device is disabled. A private receiver on private topics, the stack's registry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from metrics.v1 import device_pb2, devices_service_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from tests.helpers import eventually, read_topic
from tests.services import (
    Topics,
    free_port,
    private_topics,
    service_env,
    serving,
    start_service,
    stop_service,
)
from tests.target import Target

pb = devices_service_pb2
# A change of the devices reaches every receiver within this long of its acknowledgement.
REFUSED_WITHIN_S = 1.0


@pytest.fixture
async def topics(target: Target) -> AsyncIterator[Topics]:
    async with private_topics(target) as made:
        yield made


@pytest.fixture
async def strict_receiver(
    target: Target, topics: Topics, tmp_path: Path
) -> AsyncIterator[ReceiverServiceStub]:
    port = free_port()
    own = {
        "METRICS_RECEIVER_GRPC_PORT": str(port),
        "METRICS_RECEIVER_WORKERS": "1",
        "METRICS_RECEIVER_REQUIRE_REGISTERED_DEVICES": "true",
    }
    log = tmp_path / "receiver.log"
    process = await start_service("receiver", service_env(target, topics, "receiver", own), log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
            yield ReceiverServiceStub(channel)
    finally:
        assert await stop_service(process) == 0, log.read_text()[-3000:]


def push(sensor_ids: list[str], value: float) -> receiver_service_pb2.PushMetricsRequest:
    return receiver_service_pb2.PushMetricsRequest(
        metrics=[metric_pb2.Metric(sensor_id=s, metric_type="temperature", value=value) for s in sensor_ids]
    )


async def test_only_sensors_of_enabled_registered_devices_are_taken(
    strict_receiver: ReceiverServiceStub, envoy_channel: grpc.aio.Channel, target: Target, topics: Topics
) -> None:
    fleet = f"strict-{uuid.uuid4().hex[:10]}-"
    registered, stranger = f"{fleet}boiler-1", f"{fleet}unknown-1"
    devices = DevicesServiceStub(envoy_channel)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await strict_receiver.PushMetrics(push([registered], 1.0))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"sensor {registered!r} is not covered by an enabled registered device" in (
        refused.value.details() or ""
    )

    device = device_pb2.Device(sensor_id_prefix=f"{fleet}boiler-")
    await devices.CreateDevice(pb.CreateDeviceRequest(device_id=f"{fleet}boiler", device=device))
    try:
        created = time.monotonic()

        async def taken() -> None:
            try:
                await strict_receiver.PushMetrics(push([registered], 2.0))
            except grpc.aio.AioRpcError as error:
                raise AssertionError(error.details()) from None

        await eventually(taken, timeout=10, what="the registered device's sensor taken")
        print(f"taken {time.monotonic() - created:.3f} s after the device's creation")

        # A batch with one sensor no device covers is refused whole, naming that sensor.
        with pytest.raises(grpc.aio.AioRpcError) as mixed:
            await strict_receiver.PushMetrics(push([registered, stranger], 3.0))
        assert mixed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert repr(stranger) in (mixed.value.details() or "") and repr(registered) not in (
            mixed.value.details() or ""
        )

        await devices.DisableDevice(pb.DisableDeviceRequest(device_id=f"{fleet}boiler"))
        # The documented bound of a change (docs/devices.md): waited out, then what it promises checked.
        await asyncio.sleep(REFUSED_WITHIN_S)
        with pytest.raises(grpc.aio.AioRpcError) as refused_again:
            await strict_receiver.PushMetrics(push([registered], 4.0))
        assert refused_again.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await devices.DeleteDevice(pb.DeleteDeviceRequest(device_id=f"{fleet}boiler"))

    # Only what was taken is in Kafka: the readings of 2.0, before the disabling.
    records = await read_topic(target.kafka_bootstrap_servers, topics.metrics, {})
    values = [m.value for r in records for m in metric_pb2.MetricBatch.FromString(r.value).metrics]
    assert values and set(values) == {2.0}, values
