"""Poison records: whatever a producer writes to the topics, no consumer stalls on it.

Records that no consumer can use are produced straight to the stack's `metrics` and `events` topics,
as any producer written from protos/ can. Each must land in the dead-letter topic with its reason,
its source and the consumer that gave up on it (the processor and the saver both read `metrics`;
the saver reads `events`), and a reading of the same sensor sent afterwards through Envoy must be
stored and counted within seconds. A record that passes every check but that PostgreSQL refuses is
found among the others and dead-lettered alone.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from metrics.v1 import event_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import kafka
from runtime.kafka import client_options
from stack import access, credentials
from stack import settings as stack_settings
from tests.helpers import end_offsets, eventually, read_topic, wait_consumed
from tests.services import private_topics, service_env, start_service, stop_service
from tests.target import Target

NOW_S = int(time.time())
BATCH = kafka.headers(kafka.METRIC_BATCH_TYPE)
EVENT = kafka.headers(kafka.EVENT_TYPE)


@dataclass(frozen=True)
class Poison:
    name: str
    topic: str  # "metrics" or "events"
    # The record for a sensor id: (key, value, headers).
    make: Callable[[str], tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    reason: str  # what the dead letter's reason says


def reading(sensor: str, **fields: object) -> metric_pb2.Metric:
    metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=20.0)
    metric.reading_time.seconds = NOW_S
    for name, value in fields.items():
        if name == "reading_time":
            metric.ClearField("reading_time")
            if value is not None:
                metric.reading_time.seconds = value  # type: ignore[assignment]
        elif name == "labels":
            metric.labels.update(value)  # type: ignore[arg-type]
        else:
            setattr(metric, name, value)
    return metric


def batch(
    sensor: str, key: bytes | None = None, **fields: object
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    value = metric_pb2.MetricBatch(metrics=[reading(sensor, **fields)]).SerializeToString()
    return (sensor.encode() if key is None else key), value, BATCH


def event(sensor: str, **fields: object) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    message = event_pb2.Event(
        event_id=str(uuid.uuid4()), kind=event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, sensor_id=sensor,
        metric_type="temperature", value=99.0, threshold=95.0, count=3,
    )  # fmt: skip
    message.reading_time.seconds = message.detect_time.seconds = NOW_S
    for name, value in fields.items():
        setattr(message, name, value)
    return sensor.encode(), message.SerializeToString(), EVENT


def not_utf8(sensor: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    key, value, headers = batch(sensor)
    return key, value.replace(sensor.encode(), sensor.encode()[:-1] + b"\xff"), headers


POISONS = [
    Poison("nul-sensor", "metrics", lambda s: batch(s + "\x00x", key=s.encode()), "has characters other than"),
    Poison("not-utf8-sensor", "metrics", not_utf8, "is not a metrics.v1.MetricBatch"),
    Poison("nul-type", "metrics", lambda s: batch(s, metric_type="temp\x00"), "metric_type"),
    Poison("nul-unit", "metrics", lambda s: batch(s, unit="c\x00"), "must not contain the NUL character"),
    Poison("nul-label", "metrics", lambda s: batch(s, labels={"k\x00": "v"}), "must not contain the NUL character"),
    Poison("nan", "metrics", lambda s: batch(s, value=math.nan), "must be a finite number, got nan"),
    Poison("inf", "metrics", lambda s: batch(s, value=math.inf), "must be a finite number, got inf"),
    Poison("minus-inf", "metrics", lambda s: batch(s, value=-math.inf), "must be a finite number, got -inf"),
    Poison("huge", "metrics", lambda s: batch(s, value=1e200), "must be within ±1e+150"),
    Poison("no-time", "metrics", lambda s: batch(s, reading_time=None), "reading_time: is required"),
    Poison("time-1970", "metrics", lambda s: batch(s, reading_time=1), "is before 2000-01-01"),
    Poison("time-9999", "metrics", lambda s: batch(s, reading_time=253_402_300_799), "is in the future"),
    Poison("no-header", "metrics", lambda s: (*batch(s)[:2], []), "no message-type header"),
    Poison("other-header", "metrics", lambda s: (*batch(s)[:2], EVENT), "message-type is 'metrics.v1.Event'"),
    Poison("truncated", "metrics", lambda s: (s.encode(), batch(s)[1][:-4], BATCH), "is not a metrics.v1.MetricBatch"),
    Poison("empty-key", "metrics", lambda s: batch(s, key=b""), "key '' is not the sensor id"),
    Poison("1-mib", "metrics", lambda s: (s.encode(), b"\xff" * (1 << 20), BATCH), "is not a metrics.v1.MetricBatch"),
    Poison("event-id", "events", lambda s: event(s, event_id="42"), "event.event_id: '42' is not a UUID"),
    Poison("event-kind", "events", lambda s: event(s, kind=9), "event.kind: 9 is not a known kind"),
    Poison("event-nul", "events", lambda s: event(s + "\x00"), "event.sensor_id"),
    Poison("event-no-header", "events", lambda s: (*event(s)[:2], []), "no message-type header"),
    Poison("event-garbage", "events", lambda s: (s.encode(), b"\xff\xfe not protobuf", EVENT), "is not a metrics.v1.Event"),
]  # fmt: skip


async def test_poison_records_are_dead_lettered_and_their_partitions_flow_on(
    receiver: ReceiverServiceStub, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    run = uuid.uuid4().hex[:8]
    sensors = {p.name: f"poison-{run}-{p.name}" for p in POISONS}
    topics = {"metrics": target.metrics_topic, "events": target.events_topic}
    start = await end_offsets(target.kafka_bootstrap_servers, target.dead_letter_topic)
    producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all", max_request_size=4 << 20)
    await producer.start()
    sources: dict[str, str] = {}
    try:
        for poison in POISONS:
            key, value, headers = poison.make(sensors[poison.name])
            meta = await producer.send_and_wait(topics[poison.topic], value, key=key, headers=headers)
            sources[f"{meta.topic}[{meta.partition}]@{meta.offset}"] = poison.name
    finally:
        await producer.stop()

    # The same sensors, afterwards, through the front door: a warning each (100 >= 95).
    for sensor in sensors.values():
        metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=100.0)
        await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=[metric]), timeout=30)

    expected = {
        (name, consumer)
        for poison in POISONS
        for name, consumer in (
            [(poison.name, "processor"), (poison.name, "saver")]
            if poison.topic == "metrics"
            else [(poison.name, "saver"), (poison.name, "notifier")]
        )
    }
    reasons: dict[tuple[str, str], str] = {}

    async def all_dead_lettered() -> None:
        for record in await read_topic(target.kafka_bootstrap_servers, target.dead_letter_topic, start):
            headers = dict(record.headers)
            name = sources.get(headers["dead-letter-source"].decode())
            if name is not None:
                reasons[(name, headers["dead-letter-consumer"].decode())] = headers[
                    "dead-letter-reason"
                ].decode()
        assert set(reasons) == expected, sorted(expected - set(reasons))

    await eventually(all_dead_lettered, timeout=60, what="every poison record dead-lettered")
    by_name = {p.name: p for p in POISONS}
    wrong = {k: v for k, v in reasons.items() if by_name[k[0]].reason not in v}
    assert not wrong, wrong

    async def stored_and_counted() -> None:
        rows = await db.fetch(
            "SELECT sensor_id, value FROM readings WHERE sensor_id = ANY($1::text[])", list(sensors.values())
        )
        assert sorted(r["sensor_id"] for r in rows) == sorted(sensors.values())
        assert all(r["value"] == 100.0 for r in rows)
        for sensor in sensors.values():
            assert await redis_client.hget(f"warnings:{{{sensor}}}", "temperature") == b"1", sensor

    await eventually(stored_and_counted, timeout=30, what="the good readings stored and counted")


async def test_a_record_postgresql_refuses_is_found_and_dead_lettered_alone(
    target: Target, db: asyncpg.Pool, tmp_path: Path
) -> None:
    # A constraint stands for anything PostgreSQL refuses that no check foresaw: the saver finds
    # the one record among 40 (writing halves of the round), dead-letters it and stores the rest.
    run = uuid.uuid4().hex[:8]
    refused_value = -12345.5
    stack = stack_settings.load()
    owner = await access.postgres(stack, credentials.POSTGRES_OWNER)
    constraint = f"test_refuse_{run}"
    await owner.execute(
        f"ALTER TABLE readings_raw ADD CONSTRAINT {constraint} CHECK (value <> {refused_value}) NOT VALID"
    )
    try:
        async with private_topics(target) as topics:
            producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
            await producer.start()
            try:
                for i in range(40):
                    sensor = f"refused-{run}-{i % 10}"
                    metric = reading(sensor, value=refused_value if i == 17 else float(i))
                    metric.reading_time.FromMicroseconds(NOW_S * 1_000_000 + i)
                    value = metric_pb2.MetricBatch(metrics=[metric]).SerializeToString()
                    await producer.send(topics.metrics, value, key=sensor.encode(), headers=BATCH)
                await producer.flush()
            finally:
                await producer.stop()
            env = service_env(target, topics, "saver")
            saver = await start_service("saver", env, tmp_path / "saver.log")
            try:
                await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
                dead = await read_topic(target.kafka_bootstrap_servers, topics.dead_letters, {})
            finally:
                assert await stop_service(saver) == 0, (tmp_path / "saver.log").read_text()[-3000:]
    finally:
        await owner.execute(f"ALTER TABLE readings_raw DROP CONSTRAINT {constraint}")
        await owner.close()
    [record] = dead
    assert metric_pb2.MetricBatch.FromString(record.value).metrics[0].value == refused_value
    reason = dict(record.headers)["dead-letter-reason"].decode()
    assert reason.startswith("PostgreSQL refused it:") and constraint in reason, reason
    stored = await db.fetchval("SELECT count(*) FROM readings WHERE sensor_id LIKE $1", f"refused-{run}-%")
    assert stored == 39
