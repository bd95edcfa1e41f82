"""Strict mode (METRICS_REQUIRE_REGISTERED_DEVICES): a receiver that requires registered devices
refuses the readings of a sensor that no enabled device covers, naming the sensor, and writes
nothing of the batch; it takes them once a device covering the sensor is registered, and refuses
them again once the device is disabled. A private receiver on private topics, the stack's registry;
and so does a private MQTT bridge, which dead-letters such a message and acknowledges it."""

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
from stack import credentials
from testkit.mqtt import SUCCESS, Device
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

pb = devices_service_pb2
# A change of the devices reaches every receiver within this long of its acknowledgement.
REFUSED_WITHIN_S = 1.0


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


@pytest.fixture
async def strict_bridge(target: Target, topics: Topics, tmp_path: Path) -> AsyncIterator[None]:
    """A bridge that requires registered devices, in a shared subscription group of its own: it gets
    every message the stack's bridges get, and writes to the private topics."""
    port, name = free_port(), f"strict-{uuid.uuid4().hex[:10]}"
    own = {
        "METRICS_BRIDGE_GRPC_PORT": str(port),
        "METRICS_BRIDGE_REQUIRE_REGISTERED_DEVICES": "true",
        "METRICS_BRIDGE_SHARED_GROUP": name,
        "METRICS_BRIDGE_CLIENT_ID": name,
        "METRICS_BRIDGE_SESSION_EXPIRY_S": "0",  # nothing kept for it at the broker once it is gone
        "METRICS_BRIDGE_STATE_DIR": str(tmp_path),
        "METRICS_BRIDGE_MQTT_PASSWORD_FILE": str(target.password_file(credentials.MQTT_BRIDGE)),
    }
    log = tmp_path / "bridge.log"
    process = await start_service("bridge", service_env(target, topics, "bridge", own), log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
        yield
    finally:
        assert await stop_service(process) == 0, log.read_text()[-3000:]


@pytest.mark.usefixtures("strict_bridge")
async def test_an_mqtt_message_of_an_unregistered_sensor_is_dead_lettered(
    envoy_channel: grpc.aio.Channel, target: Target, topics: Topics
) -> None:
    fleet = f"strict-{uuid.uuid4().hex[:10]}-"
    registered, stranger = f"{fleet}boiler-1", f"{fleet}unknown-1"
    devices = DevicesServiceStub(envoy_channel)
    device = device_pb2.Device(sensor_id_prefix=f"{fleet}boiler-")
    await devices.CreateDevice(pb.CreateDeviceRequest(device_id=f"{fleet}boiler", device=device))
    publisher = Device(target.mqtt_port)  # the plaintext port: any sensor, as far as the broker goes
    await publisher.connect()
    try:

        async def readings() -> list[tuple[str, float]]:
            records = await read_topic(target.kafka_bootstrap_servers, topics.metrics, {})
            batches = [metric_pb2.MetricBatch.FromString(r.value) for r in records]
            return [(m.sensor_id, m.value) for b in batches for m in b.metrics]

        async def dead_letters() -> list[tuple[str, bytes]]:
            records = await read_topic(target.kafka_bootstrap_servers, topics.dead_letters, {})
            return [(dict(r.headers)["dead-letter-reason"].decode(), r.value) for r in records]

        async def taken() -> None:
            # The device's creation reaches the bridge within a second: until then, dead-lettered.
            assert await publisher.publish(f"metrics/v1/{registered}", '{"temperature": 1}') == SUCCESS
            assert (registered, 1.0) in await readings()

        await eventually(taken, timeout=10, what="the registered device's reading taken")
        assert await publisher.publish(f"metrics/v1/{stranger}", '{"temperature": 2}') == SUCCESS

        async def refused() -> None:
            assert (
                f"sensor_id: sensor {stranger!r} is not covered by an enabled registered device",
                b'{"temperature": 2}',
            ) in [(reason.split(" (")[0], payload) for reason, payload in await dead_letters()]

        await eventually(refused, what="the unregistered sensor's message dead-lettered")

        await devices.DisableDevice(pb.DisableDeviceRequest(device_id=f"{fleet}boiler"))
        await asyncio.sleep(REFUSED_WITHIN_S)  # the documented bound, waited out; then checked
        assert await publisher.publish(f"metrics/v1/{registered}", '{"temperature": 3}') == SUCCESS

        async def refused_again() -> None:
            assert b'{"temperature": 3}' in [payload for _, payload in await dead_letters()]

        await eventually(refused_again, what="the disabled device's message dead-lettered")
    finally:
        await publisher.close()
        await devices.DeleteDevice(pb.DeleteDeviceRequest(device_id=f"{fleet}boiler"))
    # Only what was taken is in Kafka: the registered sensor's readings before the disabling.
    taken_values = {value for _, value in await readings()}
    assert taken_values == {1.0}, taken_values
