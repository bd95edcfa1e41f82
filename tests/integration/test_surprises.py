"""Surprising data fails loudly and specifically, never silently: a Redis counter of the wrong type,
an oversized Kafka record, a database whose schema does not match its migration record."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from metrics.v1 import event_pb2, metric_pb2
from runtime import kafka
from runtime.kafka import MAX_RECORD_READINGS, client_options
from saver.migrate import MigrationError, migrate, migrations
from tests.helpers import eventually, read_topic, wait_consumed
from tests.services import Topics, private_topics, service_env, start_service, stop_service
from tests.target import Target

# Records as the contract says they are written: the consumers check the header.
BATCH_HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)

SCENARIO = (10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0)
BASE_US = 1_790_000_000_000_000


def scenario(sensor: str) -> list[bytes]:
    records = []
    for i, value in enumerate(SCENARIO):
        metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=value)
        metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
        records.append(metric_pb2.MetricBatch(metrics=[metric]).SerializeToString())
    return records


async def produce(target: Target, topic: str, key: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all", max_request_size=64 << 20)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key.encode(), headers=BATCH_HEADERS)
    finally:
        await producer.stop()


async def events_of(target: Target, topics: Topics, sensor: str) -> list[float]:
    records = await read_topic(target.kafka_bootstrap_servers, topics.events, {}, sensor.encode())
    return [event_pb2.Event.FromString(r.value).value for r in records]


async def test_a_counter_of_the_wrong_type_stops_its_partition_loudly_until_fixed(
    target: Target, redis_client: aioredis.Redis, sensor_id: str, tmp_path: Path
) -> None:
    log = tmp_path / "processor.log"
    key = f"warnings:{{{sensor_id}}}"
    await redis_client.set(key, "not a hash")
    try:
        async with private_topics(target) as topics:
            await produce(target, topics.metrics, sensor_id, scenario(sensor_id))
            processor = await start_service("processor", service_env(target, topics, "processor"), log)
            try:

                async def named() -> None:
                    text = log.read_text()
                    assert "WRONGTYPE" in text and f"(key {key})" in text, text[-2000:]

                await eventually(named, timeout=60)
                assert await events_of(target, topics, sensor_id) == [], "nothing is produced meanwhile"
                await redis_client.delete(key)  # the operator fixes it: the partition flows again
                await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
                assert await events_of(target, topics, sensor_id) == [99.0, 98.0]
                assert "rounds succeed again" in log.read_text()
            finally:
                assert await stop_service(processor) == 0
    finally:
        await redis_client.delete(key, f"last-reading:{{{sensor_id}}}")


async def test_an_oversized_record_is_dead_lettered_and_the_partition_flows_on(
    target: Target, sensor_id: str, tmp_path: Path
) -> None:
    huge = metric_pb2.MetricBatch(
        metrics=[metric_pb2.Metric(sensor_id=sensor_id, metric_type="t", value=1.0)]
        * (MAX_RECORD_READINGS + 1)
    ).SerializeToString()
    async with private_topics(target) as topics:
        await produce(target, topics.metrics, sensor_id, [huge, *scenario(sensor_id)])
        processor = await start_service(
            "processor", service_env(target, topics, "processor"), tmp_path / "p.log"
        )
        try:
            await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
            dead = await read_topic(target.kafka_bootstrap_servers, topics.dead_letters, {})
            assert await events_of(target, topics, sensor_id) == [99.0, 98.0]
        finally:
            assert await stop_service(processor) == 0
    [record] = dead
    assert dict(record.headers)["dead-letter-reason"].startswith(b"oversized: 100001 readings")


@pytest.mark.local_stack
async def test_migrations_apply_once_and_refuse_a_schema_they_do_not_know(
    scratch_database: asyncpg.Connection,
) -> None:
    conn = scratch_database
    everything = [m.version for m in migrations()]
    assert await migrate(conn) == everything
    assert await migrate(conn) == []  # applied already: nothing to do

    # A migration edited after it was applied.
    await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="0001_initial was changed after it was applied"):
        await migrate(conn)
    await conn.execute(
        "UPDATE schema_migrations SET checksum = $1 WHERE version = 1", migrations()[0].checksum
    )

    # A database from a newer saver.
    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'later', 'x')")
    with pytest.raises(MigrationError, match=r"migrations \[999\] that this saver does not know"):
        await migrate(conn)
    await conn.execute("DELETE FROM schema_migrations WHERE version = 999")

    # Tables made by other means, the record of them lost: not silently skipped, nor half-applied.
    await conn.execute("DELETE FROM schema_migrations")
    with pytest.raises(
        MigrationError, match="0001_initial is not recorded as applied, but the database already has"
    ):
        await migrate(conn)
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
