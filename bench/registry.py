"""The registry's figures: what checking a device's credential costs a call, and how soon a silent
device's alarm is raised."""

from __future__ import annotations

import time

import grpc
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bench.measure import Env
from metrics.v1 import device_pb2, devices_service_pb2, event_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import kafka
from runtime.devices import Devices
from runtime.kafka import KafkaSettings
from stack import access, consumers
from testkit.devices import delete_devices
from testkit.http import http

SILENT = event_pb2.EVENT_KIND_DEVICE_SILENT
SILENCE_S = 10  # the shortest a silence rule allows


async def revocation_check_us(registered: int = 10_000, calls: int = 200_000) -> float:
    """Microseconds a call spends in the receiver's check of a device-bound credential (the device
    registered, enabled, listing the credential; the batch's sensor its own), among `registered`
    devices: the calls timed with the check, less the same loop without it."""
    devices = Devices(KafkaSettings(kafka_security_protocol="PLAINTEXT"))  # never started: no Kafka
    try:
        for i in range(registered):
            device = device_pb2.Device(
                device_id=f"dev-{i}", sensor_id_prefix=f"dev-{i}-", state=device_pb2.DEVICE_STATE_ENABLED
            )
            device.credentials.add(credential_id=f"c-{i}")
            devices.follower.held[device.device_id] = device
            devices.coverage.changed(device.device_id, None, device)
        devices.follower.ready = True
        middle = registered // 2
        device_id, credential_id, sensors = f"dev-{middle}", f"c-{middle}", {f"dev-{middle}-t"}

        def loop(check: bool) -> float:
            began = time.perf_counter()
            for _ in range(calls):
                if check:
                    devices.check(device_id, credential_id, sensors, "metrics")
            return time.perf_counter() - began

        with_check = min(loop(True) for _ in range(3))
        without = min(loop(False) for _ in range(3))
        return (with_check - without) / calls * 1e6
    finally:
        await devices.follower.stop()


async def silence_alarm_latency(env: Env, count: int) -> list[float]:
    """Milliseconds from the time each of `count` devices became silent (one reading each, then
    nothing for a silence rule's 10 s) to the production of its alarm's event (the record's time)."""
    prefix = f"{env.prefix}silent-"
    ids = [f"{prefix}{i}" for i in range(count)]
    async with grpc.aio.insecure_channel(env.envoy) as channel:
        registry = DevicesServiceStub(channel)
        try:
            for first in range(0, count, 10_000):
                await registry.BatchCreateDevices(devices_service_pb2.BatchCreateDevicesRequest(requests=[
                    devices_service_pb2.CreateDeviceRequest(
                        device_id=i, device=device_pb2.Device(sensor_id_prefix=f"{i}-")
                    ) for i in ids[first : first + 10_000]
                ]))  # fmt: skip
            return await _alarms_of_silence(env, channel, prefix, ids)
        finally:
            await delete_devices(registry, prefix)


async def _alarms_of_silence(env: Env, channel: grpc.aio.Channel, prefix: str, ids: list[str]) -> list[float]:
    consumer = await _events_from_end(env)
    status, rule = await http("POST", f"http://{env.envoy}/v1/rules", {
        "silence": {"after": f"{SILENCE_S}s", "deviceIdPrefix": prefix}, "severity": "SEVERITY_MINOR",
    })  # fmt: skip
    assert status == 200, rule
    try:
        receiver = ReceiverServiceStub(channel)
        for first in range(0, len(ids), 1_000):
            await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=[
                metric_pb2.Metric(sensor_id=f"{i}-t", metric_type="temperature", value=1.0)
                for i in ids[first : first + 1_000]
            ]))  # fmt: skip
        return await _silent(consumer, rule["ruleId"], len(ids), SILENCE_S + 60)
    finally:
        await consumer.stop()
        await http("DELETE", f"http://{env.envoy}/v1/rules/{rule['ruleId']}")


async def _events_from_end(env: Env) -> AIOKafkaConsumer:
    """A consumer of every partition of the events topic, from its end."""
    options = kafka.client_options(access.kafka(env.stack))
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        partitions = await consumers.topic_partitions(admin, "events")
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)  # resolved now, before the events to come
    return consumer


async def _silent(consumer: AIOKafkaConsumer, rule_id: str, count: int, within_s: float) -> list[float]:
    """The detection latencies (ms) of the rule's silence alarms, until `count` or `within_s`."""
    latencies: dict[str, float] = {}
    deadline = time.monotonic() + within_s
    while len(latencies) < count and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                event = event_pb2.Event.FromString(record.value)
                if event.kind == SILENT and event.rule_id == rule_id:
                    # From when it became silent to when its event was produced (the record's time).
                    silent_us = event.alarm.raise_time.ToMicroseconds()
                    latencies[event.sensor_id] = record.timestamp - silent_us / 1000
    return list(latencies.values())
