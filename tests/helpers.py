"""Helpers of the integration tests: waiting on conditions, Kafka offsets (HTTP: testkit/http.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from metrics.v1 import event_pb2
from runtime.kafka import client_options
from testkit import reported
from testkit.http import http
from tests.target import Target, load

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def past_us(hours: int) -> int:
    """A fixed time of this run for readings of the past: the start of the UTC day before
    yesterday plus `hours`. Within the raw readings' retention (a fixed date would expire and be
    deleted by the saver's next history pass), never ahead."""
    return (time.time_ns() // 1000 // DAY_US - 2) * DAY_US + hours * HOUR_US


T = TypeVar("T")


def kafka_options(bootstrap: str) -> dict[str, Any]:
    """A Kafka client's options: `bootstrap`, logged in as the target's admin."""
    return {**client_options(load().kafka()), "bootstrap_servers": bootstrap}


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 30.0, what: str = "condition"
) -> T:
    """Calls `check` until it returns without AssertionError; the last failure if it never does."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in description["partitions"]]
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap))
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def wait_consumed(bootstrap: str, group: str, topic: str, timeout: float = 60.0) -> None:
    """Waits until `group` committed everything now in `topic`, i.e. processed it completely."""
    target = await end_offsets(bootstrap, topic)

    async def caught_up() -> None:
        committed = await committed_offsets(bootstrap, group)
        behind = {tp: end for tp, end in target.items() if committed.get(tp, 0) < end}
        assert not behind, f"{group} has not committed up to {behind}"

    await eventually(caught_up, timeout=timeout, what=f"{group} caught up on {topic}")


async def read_topic(
    bootstrap: str, topic: str, start: dict[TopicPartition, int], key: bytes | None = None
) -> list[Any]:
    """The records of `topic` from `start` up to its current end (only those with `key`, if given)."""
    end = await end_offsets(bootstrap, topic)
    wanted = [tp for tp in end if end[tp] > start.get(tp, 0)]
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, start.get(tp, 0))
        records: list[Any] = []
        remaining = set(wanted)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, items in batch.items():
                records.extend(r for r in items if r.offset < end[tp] and (key is None or r.key == key))
                if items and items[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


def rfc3339(seconds: float) -> str:
    """A time in seconds since 1970 as JSON writes a Timestamp."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e6):06d}Z"


async def send(envoy_url: str, sensor: str, metric_type: str, *values: float, start: float = 0.0) -> None:
    """Readings a millisecond apart from `start` (by default: so that the last is now), in one batch,
    through Envoy's HTTP/JSON push."""
    base = start or time.time() - len(values) / 1000
    metrics = [
        {"sensorId": sensor, "metricType": metric_type, "value": v, "readingTime": rfc3339(base + i / 1000)}
        for i, v in enumerate(values)
    ]
    status, body = await http("POST", f"{envoy_url}/v1/metrics:push", {"metrics": metrics})
    assert status == 200, body


async def only_alarm(envoy_url: str, sensor_id: str) -> str:
    """The id of the sensor's alarm, once it has one listed (through Envoy's HTTP/JSON)."""

    async def listed() -> str:
        status, body = await http("GET", f"{envoy_url}/v1/alarms?sensorId={sensor_id}")
        assert status == 200 and len(body["alarms"]) == 1, body
        return str(body["alarms"][0]["alarmId"])

    return await eventually(listed, timeout=10, what=f"an alarm of {sensor_id} listed")


async def rules_in_force(target: Target) -> None:
    """Waits until every processor of the target applies the rules as the rules topic holds them now."""
    await reported.rules_in_force(kafka_options(target.kafka_bootstrap_servers), target.rules_topic,
                                  target.processor_metrics)  # fmt: skip


def distinct_events(records: list[ConsumerRecord[bytes, bytes]]) -> list[event_pb2.Event]:
    """The events on the topic, each once: an event produced again must be the same bytes."""
    first: dict[str, bytes] = {}
    for record in records:
        event = event_pb2.Event.FromString(record.value)
        assert first.setdefault(event.event_id, record.value) == record.value, "a repeat is the same event"
    return [event_pb2.Event.FromString(value) for value in first.values()]
