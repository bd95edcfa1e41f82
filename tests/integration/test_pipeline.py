"""The original system's scenario through every ingest path: readings 10, 100, 97, 99, 10, 100, 107, 98
of a new sensor → events at 99 and 98 (in Kafka and PostgreSQL), the Redis counter at 3, eight rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import redis.asyncio as aioredis

from metrics.v1 import event_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from testkit.http import http
from tests.helpers import end_offsets, eventually, past_us, read_topic, wait_consumed
from tests.target import Target

SCENARIO = (10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0)
BASE_US = past_us(4)  # a fixed past time, one reading per second from it


def readings(sensor_id: str, metric_type: str = "temperature") -> list[metric_pb2.Metric]:
    out = []
    for i, value in enumerate(SCENARIO):
        metric = metric_pb2.Metric(sensor_id=sensor_id, metric_type=metric_type, value=value)
        metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
        out.append(metric)
    return out


def as_json(metric: metric_pb2.Metric) -> dict[str, object]:
    return {
        "sensorId": metric.sensor_id,
        "metricType": metric.metric_type,
        "value": metric.value,
        "readingTime": metric.reading_time.ToJsonString(),
    }


async def grpc_unary(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    for metric in readings(sensor):
        reply = await stub.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=[metric]), timeout=10)
        assert reply.accepted_count == 1


async def grpc_unary_one_batch(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    reply = await stub.PushMetrics(
        receiver_service_pb2.PushMetricsRequest(metrics=readings(sensor)), timeout=10
    )
    assert reply.accepted_count == len(SCENARIO)


async def grpc_client_stream(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    async def batches() -> AsyncIterator[receiver_service_pb2.StreamMetricsRequest]:
        for metric in readings(sensor):
            yield receiver_service_pb2.StreamMetricsRequest(metrics=[metric])

    reply = await stub.StreamMetrics(batches(), timeout=10)
    assert (reply.accepted_count, reply.batch_count) == (len(SCENARIO), len(SCENARIO))


async def grpc_bidi(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    call = stub.SyncMetrics(timeout=10)
    for sequence, metric in enumerate(readings(sensor), start=100):
        await call.write(receiver_service_pb2.SyncMetricsRequest(sequence=sequence, metrics=[metric]))
    await call.done_writing()
    acks = [ack async for ack in call]
    assert [(a.sequence, a.accepted_count, a.status.code) for a in acks] == [
        (sequence, 1, 0) for sequence in range(100, 100 + len(SCENARIO))
    ]


async def http_push(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    for metric in readings(sensor):
        status, body = await http(
            "POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": [as_json(metric)]}
        )
        assert (status, body) == (200, {"acceptedCount": 1})


async def http_stream(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    body = [{"metrics": [as_json(m)]} for m in readings(sensor)]
    status, reply = await http("POST", f"{target.envoy_url}/v1/metrics:stream", body)
    # 64-bit integer fields are strings in proto3 JSON.
    assert (status, reply) == (200, {"acceptedCount": "8", "batchCount": "8"})


async def legacy_route(stub: ReceiverServiceStub, target: Target, sensor: str) -> None:
    for metric in readings(sensor):
        at_ms = metric.reading_time.ToMilliseconds()
        status, body = await http(
            "POST",
            f"{target.envoy_url}/api/v1/sensors/{sensor}/measurements",
            {"temperature": metric.value, "at": at_ms},
        )
        assert (status, body) == (200, {"result": True, "response": "OK"})


PATHS: dict[str, Callable[[ReceiverServiceStub, Target, str], Awaitable[None]]] = {
    "grpc-unary": grpc_unary,
    "grpc-unary-one-batch": grpc_unary_one_batch,
    "grpc-client-stream": grpc_client_stream,
    "grpc-bidi": grpc_bidi,
    "http-push": http_push,
    "http-stream": http_stream,
    "legacy-route": legacy_route,
}


@pytest.mark.parametrize("path", PATHS)
async def test_original_scenario(
    path: str, receiver: ReceiverServiceStub, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis,
    sensor_id: str,
) -> None:  # fmt: skip
    events_start = await end_offsets(target.kafka_bootstrap_servers, target.events_topic)

    await PATHS[path](receiver, target, sensor_id)

    # Every reading the receiver acknowledged is processed (events produced) and stored.
    await wait_consumed(target.kafka_bootstrap_servers, target.processor_group, target.metrics_topic)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.events_topic)

    records = await read_topic(
        target.kafka_bootstrap_servers, target.events_topic, events_start, sensor_id.encode()
    )
    events = [event_pb2.Event.FromString(r.value) for r in records]
    assert [(e.value, e.reading_time.ToMicroseconds()) for e in events] == [
        (99.0, BASE_US + 3_000_000),
        (98.0, BASE_US + 7_000_000),
    ]
    assert all(
        e.kind == event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED and e.count == 3 and e.threshold == 95
        for e in events
    )
    assert all(dict(r.headers)["message-type"] == b"metrics.v1.Event" for r in records)

    stored_events = await db.fetch(
        "SELECT value, reading_time, event_id FROM events WHERE sensor_id = $1 ORDER BY reading_time",
        sensor_id,
    )
    assert [(r["value"], r["reading_time"]) for r in stored_events] == [
        (99.0, BASE_US + 3_000_000),
        (98.0, BASE_US + 7_000_000),
    ]
    assert [r["event_id"].hex for r in stored_events] == [e.event_id for e in events]

    assert await redis_client.hgetall(f"warnings:{{{sensor_id}}}") == {b"temperature": b"3"}

    rows = await db.fetch(
        "SELECT value, reading_time FROM readings WHERE sensor_id = $1 ORDER BY reading_time", sensor_id
    )
    assert [(r["value"], r["reading_time"]) for r in rows] == [
        (v, BASE_US + i * 1_000_000) for i, v in enumerate(SCENARIO)
    ]
    rollup = await db.fetchrow(
        "SELECT sum(count) AS n, sum(sum) AS s, min(min) AS lo, max(max) AS hi"
        " FROM rollups_minute WHERE sensor_id = $1",
        sensor_id,
    )
    assert (rollup["n"], rollup["s"], rollup["lo"], rollup["hi"]) == (8, sum(SCENARIO), 10.0, 107.0)


async def test_resent_readings_are_stored_and_counted_once(
    receiver: ReceiverServiceStub,
    target: Target,
    db: asyncpg.Pool,
    redis_client: aioredis.Redis,
    sensor_id: str,
) -> None:
    # A client retry of the same batch (10, 100, 97): the rows, the rollups and the counter do not double.
    batch = receiver_service_pb2.PushMetricsRequest(metrics=readings(sensor_id)[:3])
    for _ in range(2):
        await receiver.PushMetrics(batch, timeout=10)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic)
    await wait_consumed(target.kafka_bootstrap_servers, target.processor_group, target.metrics_topic)
    assert await db.fetchval("SELECT count(*) FROM readings WHERE sensor_id = $1", sensor_id) == 3
    assert await db.fetchval("SELECT sum(count) FROM rollups_minute WHERE sensor_id = $1", sensor_id) == 3
    assert await redis_client.hgetall(f"warnings:{{{sensor_id}}}") == {b"temperature": b"2"}


async def test_readings_without_time_get_distinct_arrival_times(
    receiver: ReceiverServiceStub, target: Target, db: asyncpg.Pool, sensor_id: str
) -> None:
    metrics = [
        metric_pb2.Metric(sensor_id=sensor_id, metric_type="humidity", value=float(i)) for i in range(5)
    ]
    await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=metrics), timeout=10)

    async def stored() -> list[asyncpg.Record]:
        rows = await db.fetch(
            "SELECT value, reading_time FROM readings WHERE sensor_id = $1 ORDER BY reading_time", sensor_id
        )
        assert len(rows) == 5
        return rows

    rows = await eventually(stored)
    assert [r["value"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_several_sensors_and_types_interleaved(
    receiver: ReceiverServiceStub, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    sensors = [f"mix-{i}-{uuid.uuid4().hex[:12]}" for i in range(3)]
    # One batch with three sensors and two metric types interleaved; only temperature has a rule.
    metrics: list[metric_pb2.Metric] = []
    for i, value in enumerate(SCENARIO):
        for sensor in sensors:
            for metric_type in ("temperature", "pressure"):
                metric = metric_pb2.Metric(sensor_id=sensor, metric_type=metric_type, value=value)
                metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
                metrics.append(metric)
    await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=metrics), timeout=10)
    await wait_consumed(target.kafka_bootstrap_servers, target.processor_group, target.metrics_topic)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.events_topic)
    for sensor in sensors:
        assert await redis_client.hgetall(f"warnings:{{{sensor}}}") == {b"temperature": b"3"}
        rows = await db.fetch(
            "SELECT metric_type, count(*) AS n FROM readings WHERE sensor_id = $1 GROUP BY 1 ORDER BY 1",
            sensor,
        )
        assert [(r["metric_type"], r["n"]) for r in rows] == [("pressure", 8), ("temperature", 8)]
        values = await db.fetch("SELECT value FROM events WHERE sensor_id = $1 ORDER BY reading_time", sensor)
        assert [r["value"] for r in values] == [99.0, 98.0]
