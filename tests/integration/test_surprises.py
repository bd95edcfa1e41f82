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
from runtime.migrations import LEGACY, OWNERS, Migration, MigrationError, migrate, migrations
from tests.helpers import eventually, past_us, read_topic, wait_consumed
from tests.services import Topics, private_topics, service_env, start_service, stop_service
from tests.target import Target

# Records as the contract says they are written: the consumers check the header.
BATCH_HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)

SCENARIO = (10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0)
BASE_US = past_us(12)


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
    saver = [m.version for m in migrations(OWNERS["saver"])]
    assert await migrate(conn, "saver") == saver
    assert await migrate(conn, "saver") == []  # applied already: nothing to do
    notifier = [m.version for m in migrations(OWNERS["notifier"])]
    assert await migrate(conn, "notifier") == notifier  # each owner its own record
    first = migrations(OWNERS["saver"])[0]

    # A migration edited after it was applied.
    await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE owner = 'saver' AND version = 1")
    with pytest.raises(MigrationError, match="saver migration 0001_initial was changed after it was applied"):
        await migrate(conn, "saver")
    await conn.execute(
        "UPDATE schema_migrations SET checksum = $1 WHERE owner = 'saver' AND version = 1", first.checksum
    )

    # A database from a newer saver.
    await conn.execute(
        "INSERT INTO schema_migrations (owner, version, name, checksum) VALUES ('saver', 999, 'later', 'x')"
    )
    with pytest.raises(MigrationError, match=r"saver migrations \[999\] that this saver does not know"):
        await migrate(conn, "saver")
    await conn.execute("DELETE FROM schema_migrations WHERE version = 999")

    # Tables made by other means, the record of them lost: not silently skipped, nor half-applied.
    await conn.execute("DELETE FROM schema_migrations WHERE owner = 'saver'")
    with pytest.raises(
        MigrationError,
        match="saver migration 0001_initial is not recorded as applied, but the database already has",
    ):
        await migrate(conn, "saver")
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE owner = 'saver'") == 0


# What the saver's old list of every table's migrations (legacy versions 1-10) held, by owner: the
# migrations of each owner that hold the work of the first `n` legacy ones.
def holding(owner: str, legacy: int) -> list[Migration]:
    return [m for m in migrations(OWNERS[owner]) if m.adopts and max(m.adopts) <= legacy]


@pytest.mark.local_stack
@pytest.mark.parametrize("legacy", [10, 5])
async def test_a_database_migrated_before_each_service_had_its_migrations_is_taken_over(
    scratch_database: asyncpg.Connection, tmp_path: Path, legacy: int
) -> None:
    # A database as the saver left it when it applied every table's migrations, the first `legacy`
    # of the old list, in one record without owners: the work of those is recorded as done and not
    # run again (it would fail: the tables exist); what came after, and what is new, is applied.
    conn = scratch_database
    for owner in OWNERS:
        folder = tmp_path / owner
        folder.mkdir()
        for migration in holding(owner, legacy):
            (folder / f"{migration}.sql").write_text(migration.sql)
        await migrate(conn, owner, folder)
    await conn.execute(
        f"""
        DROP TABLE schema_migrations;
        CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                        checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
        INSERT INTO schema_migrations (version, name, checksum)
        SELECT v, 'old_' || v, 'x' FROM generate_series(1, {legacy}) v;
        """
    )
    for owner in OWNERS:
        everything = migrations(OWNERS[owner])
        # (Running one whose work is there would fail: what it creates exists.)
        assert await migrate(conn, owner) == [m.version for m in everything]
        recorded = await conn.fetch(
            "SELECT version, checksum FROM schema_migrations WHERE owner = $1 ORDER BY version", owner
        )
        assert [(r["version"], r["checksum"]) for r in recorded] == [
            (m.version, m.checksum) for m in everything
        ]
    legacy_rows = await conn.fetch("SELECT version FROM schema_migrations WHERE owner = $1", LEGACY)
    assert sorted(r["version"] for r in legacy_rows) == list(range(1, legacy + 1))
    # What the later ones make is there: the alarms (legacy 7), the acts on them (new).
    for table in ("alarms", "alarm_actions"):
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table
    assert await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'rules' AND column_name = 'clear_count'"
    )
