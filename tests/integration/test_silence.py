"""Silence rules: a registered device that sends nothing for the rule's time raises an alarm
(EVENT_KIND_DEVICE_SILENT) once, its next reading clears it once; a device never heard from is
silent from when it is first watched; the alarm survives a processor's kill -9 between its raise
and its event (no alarm missed, none twice)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer

from metrics.v1 import device_pb2, devices_service_pb2, event_pb2, metric_pb2
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from runtime import kafka
from runtime.kafka import client_options
from testkit.http import http
from tests.helpers import distinct_events, end_offsets, eventually, read_topic, rules_in_force, send
from tests.services import Topics, private_topics, service_env, start_service, stop_service
from tests.target import Target

pb = devices_service_pb2
SILENT, CLEARED = event_pb2.EVENT_KIND_DEVICE_SILENT, event_pb2.EVENT_KIND_ALARM_CLEARED
AFTER_S = 10  # the shortest a rule allows
BATCH_HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)


@pytest.fixture
async def device(envoy_channel: grpc.aio.Channel) -> AsyncIterator[str]:
    """A registered device of its own (sensors "<id>-..."), deleted afterwards."""
    device_id = f"quiet-{uuid.uuid4().hex[:12]}"
    stub = DevicesServiceStub(envoy_channel)
    await stub.CreateDevice(
        pb.CreateDeviceRequest(
            device_id=device_id,
            device=device_pb2.Device(sensor_id_prefix=f"{device_id}-", labels={"site": "plant-7"}),
        )
    )
    yield device_id
    await stub.DeleteDevice(pb.DeleteDeviceRequest(device_id=device_id))


async def events_of(target: Target, topic: str, start: dict[Any, int], device_id: str) -> list[Any]:
    return await read_topic(target.kafka_bootstrap_servers, topic, start, device_id.encode())


async def test_a_silent_device_raises_an_alarm_once_and_its_next_reading_clears_it(
    target: Target, device: str, rules: Callable[..., Awaitable[dict[str, Any]]], db: asyncpg.Pool
) -> None:
    start = await end_offsets(target.kafka_bootstrap_servers, target.events_topic)
    rule = await rules(
        silence={"after": f"{AFTER_S}s", "deviceIdPrefix": device, "deviceLabels": {"site": "plant-7"}},
        severity="SEVERITY_MAJOR",
    )
    assert (rule["metricType"], rule["threshold"], rule["silence"]["after"]) == ("", 0, f"{AFTER_S}s"), rule
    await rules_in_force(target)
    await send(target.envoy_url, f"{device}-temperature", "temperature", 21.0)

    async def raised() -> event_pb2.Event:
        events = distinct_events(await events_of(target, target.events_topic, start, device))
        assert [e.kind for e in events] == [SILENT], events
        return events[0]

    alarm = await eventually(raised, timeout=AFTER_S + 30, what="the device's silence alarm")
    assert (alarm.rule_id, alarm.sensor_id, alarm.severity, alarm.threshold) == (
        rule["ruleId"], device, event_pb2.SEVERITY_MAJOR, AFTER_S,
    )  # fmt: skip
    silent_since = alarm.alarm.raise_time.ToMicroseconds()
    assert silent_since == alarm.reading_time.ToMicroseconds() + AFTER_S * 1_000_000
    print(
        f"raised {(alarm.detect_time.ToMicroseconds() - silent_since) / 1000:.0f} ms after the device's time"
    )

    await send(target.envoy_url, f"{device}-temperature", "temperature", 22.0)

    async def cleared() -> list[event_pb2.Event]:
        events = distinct_events(await events_of(target, target.events_topic, start, device))
        assert [e.kind for e in events] == [SILENT, CLEARED], events
        return events

    _, clear = await eventually(cleared, timeout=30, what="the alarm cleared by the next reading")
    assert (clear.alarm_id, clear.alarm.state, clear.alarm.cleared_by) == (
        alarm.alarm_id, event_pb2.ALARM_STATE_CLEARED, "rule",
    )  # fmt: skip

    async def stored() -> None:
        row = await db.fetchrow(
            "SELECT count(*) AS alarms, count(clear_time) AS cleared FROM alarms WHERE sensor_id = $1", device
        )
        assert (row["alarms"], row["cleared"]) == (1, 1), dict(row)

    await eventually(stored, timeout=30, what="the alarm stored, cleared")


async def test_a_device_never_heard_from_is_silent_from_when_it_is_first_watched(
    target: Target, device: str, rules: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    start = await end_offsets(target.kafka_bootstrap_servers, target.events_topic)
    watched = time.time()
    await rules(silence={"after": f"{AFTER_S}s", "deviceIdPrefix": device})

    async def raised() -> event_pb2.Event:
        events = distinct_events(await events_of(target, target.events_topic, start, device))
        assert [e.kind for e in events] == [SILENT], events
        return events[0]

    alarm = await eventually(
        raised, timeout=AFTER_S + 30, what="the silence alarm of a device never heard from"
    )
    assert alarm.reading_time.ToMicroseconds() >= int(watched * 1_000_000) - 1_000_000


async def test_a_silence_rule_is_refused_with_fields_of_a_threshold_rule(target: Target) -> None:
    status, body = await http(
        "POST", f"{target.envoy_url}/v1/rules",
        {"silence": {"after": "5s", "deviceLabels": {"a=b": "c"}}, "metricType": "temperature", "threshold": 3},
    )  # fmt: skip
    assert status == 400, body
    fields = {v["field"] for v in body["details"][0]["fieldViolations"]}
    assert fields == {
        "rule.silence.after",
        "rule.silence.device_labels['a=b']",
        "rule.metric_type",
        "rule.threshold",
    }


async def produce_reading(target: Target, topics: Topics, sensor_id: str) -> None:
    producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
    await producer.start()
    try:
        metric = metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=1.0)
        metric.reading_time.FromMicroseconds(time.time_ns() // 1000)
        batch = metric_pb2.MetricBatch(metrics=[metric])
        await producer.send_and_wait(
            topics.metrics, batch.SerializeToString(), key=sensor_id.encode(), headers=BATCH_HEADERS
        )
    finally:
        await producer.stop()


async def test_a_processor_killed_between_a_silence_alarm_and_its_event_loses_and_doubles_nothing(
    target: Target,
    device: str,
    rules: Callable[..., Awaitable[dict[str, Any]]],
    rules_topic: str,
    tmp_path: Path,
) -> None:
    # A private processor (its own topics, so its own silence keys) dies once the alarm is raised in
    # Redis, before its event is produced: the next one produces it, once; the device's next reading
    # clears it, once.
    await rules(silence={"after": f"{AFTER_S}s", "deviceIdPrefix": device})
    log = tmp_path / "processor.log"
    own = {"METRICS_PROCESSOR_RULES_TOPIC": rules_topic, "METRICS_PROCESSOR_GRPC_PORT": "0"}
    async with private_topics(target) as topics:
        armed = service_env(
            target, topics, "processor", {**own, "METRICS_PROCESSOR_FAILPOINTS": "silence.after_raise"}
        )
        crashing = await start_service("processor", armed, log)
        assert await asyncio.wait_for(crashing.wait(), AFTER_S + 60) == -9, log.read_text()[-3000:]
        assert not await events_of(target, topics.events, {}, device), "produced before the crash"

        healthy = await start_service("processor", service_env(target, topics, "processor", own), log)
        try:

            async def raised() -> None:
                events = distinct_events(await events_of(target, topics.events, {}, device))
                assert [e.kind for e in events] == [SILENT], events

            await eventually(raised, timeout=30, what="the alarm's event produced by the next processor")
            await produce_reading(target, topics, f"{device}-temperature")

            async def cleared() -> None:
                events = distinct_events(await events_of(target, topics.events, {}, device))
                assert [e.kind for e in events] == [SILENT, CLEARED], events

            await eventually(cleared, timeout=30, what="the alarm cleared by the device's reading")
        finally:
            assert await stop_service(healthy) == 0, log.read_text()[-3000:]
        records = await events_of(target, topics.events, {}, device)
        assert len(records) == 2, "an event produced twice"
