"""Inside the stack: Kafka, Redis and PostgreSQL refuse a client without credentials, and each account
may do what its service needs and nothing more."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime.kafka import KafkaSettings, client_options
from stack import credentials
from tests.helpers import end_offsets, eventually
from tests.target import Target

# --- Kafka ---------------------------------------------------------------------------------------


async def test_kafka_refuses_a_client_without_credentials(target: Target) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=target.kafka_bootstrap_servers, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(admin.start(), 30)
    await admin.close()


async def test_kafka_refuses_a_wrong_password(target: Target) -> None:
    wrong = KafkaSettings(target.kafka_bootstrap_servers, kafka_username="receiver", kafka_password="wrong")
    producer = AIOKafkaProducer(**client_options(wrong))
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()


async def test_the_receiver_may_not_write_events_nor_read_metrics(target: Target) -> None:
    receiver = client_options(target.kafka(credentials.KAFKA_RECEIVER))
    producer = AIOKafkaProducer(**receiver)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(target.events_topic, b"not allowed")
    finally:
        await producer.stop()
    # Not as a member of a consumer group, nor by reading partitions directly.
    member = AIOKafkaConsumer(target.metrics_topic, group_id=target.processor_group, **receiver)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await asyncio.wait_for(member.start(), 30)
    finally:
        await member.stop()
    reader = AIOKafkaConsumer(**receiver, enable_auto_commit=False)
    await reader.start()
    try:
        partition = TopicPartition(target.metrics_topic, 0)
        reader.assign([partition])
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(reader.seek_to_beginning(partition), 30)
            await asyncio.wait_for(reader.getmany(partition, timeout_ms=5000), 30)
    finally:
        await reader.stop()


async def test_the_processor_and_the_saver_may_not_write_metrics(target: Target) -> None:
    for account in (credentials.KAFKA_PROCESSOR, credentials.KAFKA_SAVER):
        producer = AIOKafkaProducer(**client_options(target.kafka(account)))
        await producer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(target.metrics_topic, b"not allowed")
        finally:
            await producer.stop()


# --- Redis ---------------------------------------------------------------------------------------


def redis_as(target: Target, user: str | None, password: str | None) -> aioredis.Redis:
    return aioredis.Redis.from_url(target.redis_url_of(user), password=password)


async def test_redis_refuses_a_client_without_credentials_and_the_default_user(target: Target) -> None:
    anonymous = redis_as(target, None, None)
    try:
        with pytest.raises(AuthenticationError):  # NOAUTH
            await anonymous.ping()
    finally:
        await anonymous.aclose()
    # The default user is off, whatever its password.
    default = redis_as(target, "default", "anything")
    try:
        with pytest.raises(AuthenticationError):
            await default.ping()
    finally:
        await default.aclose()


async def test_the_processors_redis_user_has_its_keys_and_commands_only(
    target: Target, sensor_id: str
) -> None:
    processor = redis_as(target, "processor", target.password(credentials.REDIS_PROCESSOR))
    try:
        assert await processor.hget("warnings:{" + sensor_id + "}", "temperature") is None  # its own
        with pytest.raises(NoPermissionError):
            await processor.flushall()
        with pytest.raises(NoPermissionError):
            await processor.config_get("requirepass")
        with pytest.raises(NoPermissionError):  # a key outside its patterns
            await processor.hget(f"elsewhere:{sensor_id}", "temperature")
        with pytest.raises(NoPermissionError):  # a command outside its list, on its own keys
            await processor.delete("warnings:{" + sensor_id + "}")
        # Its index of clears by hand, and WAIT for replicas (none here), but no other set.
        assert isinstance(await processor.smembers("processor:cleared-by-hand"), set)
        assert await processor.execute_command("WAIT", 0, 0) == 0
        with pytest.raises(NoPermissionError):
            await processor.smembers(f"elsewhere:{sensor_id}")
        # It may load and run scripts (its counters are one), but a script may do no more than it.
        script = await processor.script_load("return redis.call('FLUSHALL')")
        with pytest.raises(ResponseError, match="can't run this command"):
            await processor.evalsha(script, 0)
    finally:
        await processor.aclose()


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def no_stored_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No password from the environment or a password file: a connection gets only what it is given."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@pytest.mark.usefixtures("no_stored_password")
async def test_postgres_refuses_a_role_without_its_password(target: Target) -> None:
    for account in (credentials.POSTGRES_READER, credentials.POSTGRES_WRITER, credentials.POSTGRES_OWNER):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(target.postgres_dsn_of(account), password=None)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(target.postgres_dsn_of(account), password="wrong")


async def test_the_reader_may_not_write_and_the_writer_may_not_change_the_schema(target: Target) -> None:
    reader = await asyncpg.connect(target.postgres_dsn, password=target.password(credentials.POSTGRES_READER))
    try:
        # Not only read-only by default (which the role could switch off): not granted.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with reader.transaction(readonly=False):
                await reader.execute("SET TRANSACTION READ WRITE")
                await reader.execute("DELETE FROM readings_raw WHERE false")
    finally:
        await reader.close()
    writer_account = credentials.POSTGRES_WRITER
    writer = await asyncpg.connect(
        target.postgres_dsn_of(writer_account), password=target.password(writer_account)
    )
    try:
        await writer.execute("DELETE FROM readings_raw WHERE false")  # what it is for
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await writer.execute("CREATE TABLE not_allowed (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await writer.execute("DROP TABLE readings_raw")
    finally:
        await writer.close()


# Statements a role may or may not run, each rolled back: (statement, allowed). A service writes
# only the tables it owns (their migrations say who may use them: runtime/migrations.py).
WRITE = "DELETE FROM {} WHERE false"
READ = "SELECT count(*) FROM {}"
MAY = {
    credentials.POSTGRES_WRITER: {  # the saver
        WRITE.format("readings_raw"): True,
        WRITE.format("series"): False,  # series are made, never deleted (saver/series.py)
        WRITE.format("alarms"): True,
        READ.format("history_horizons"): False,
        READ.format("rules"): False,
        WRITE.format("rules"): False,
        WRITE.format("alarm_actions"): False,
    },
    credentials.POSTGRES_PROCESSOR: {
        WRITE.format("rules"): True,
        WRITE.format("alarm_actions"): True,
        READ.format("alarms"): True,
        WRITE.format("alarms"): False,
        READ.format("readings"): False,
        READ.format("readings_raw"): False,
        WRITE.format("events"): False,
    },
    credentials.POSTGRES_READER: {  # the assessor
        READ.format("readings"): True,
        READ.format("series"): True,
        WRITE.format("readings_raw"): False,
        READ.format("history_horizons"): True,
        READ.format("rules"): False,
        READ.format("alarm_actions"): False,
    },
}


@pytest.mark.parametrize("account", list(MAY), ids=lambda a: a.user)
async def test_a_service_writes_only_the_tables_it_owns(target: Target, account: credentials.Account) -> None:
    conn = await asyncpg.connect(target.postgres_dsn_of(account), password=target.password(account))
    try:
        for statement, allowed in MAY[account].items():
            try:
                async with conn.transaction(readonly=False):
                    await conn.execute("SET TRANSACTION READ WRITE")
                    await conn.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                assert not allowed, f"{account.user} may not: {statement}"
            else:
                assert allowed, f"{account.user} may: {statement}"
    finally:
        await conn.close()


async def test_the_notifier_may_read_events_but_write_no_topic_of_the_pipeline(target: Target) -> None:
    notifier = client_options(target.kafka(credentials.KAFKA_NOTIFIER))
    producer = AIOKafkaProducer(**notifier)
    await producer.start()
    try:
        for topic in (target.metrics_topic, target.events_topic):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, b"not allowed")
    finally:
        await producer.stop()
    member = AIOKafkaConsumer(target.events_topic, group_id=target.saver_group, **notifier)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await asyncio.wait_for(member.start(), 30)
    finally:
        await member.stop()


async def test_the_assessor_may_read_every_partition_of_events_and_nothing_else(
    target: Target, receiver: ReceiverServiceStub, sensor_id: str
) -> None:
    assessor = client_options(target.kafka(credentials.KAFKA_ASSESSOR))
    producer = AIOKafkaProducer(**assessor)
    await producer.start()
    try:
        for topic in (
            target.metrics_topic,
            target.events_topic,
            target.dead_letter_topic,
            target.rules_topic,
        ):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, b"not allowed")
    finally:
        await producer.stop()
    member = AIOKafkaConsumer(target.events_topic, group_id=target.notifier_group, **assessor)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await asyncio.wait_for(member.start(), 30)
    finally:
        await member.stop()
    reader = AIOKafkaConsumer(**assessor, enable_auto_commit=False)
    await reader.start()
    try:
        # Of the pipeline's topics it may not even see that metrics exists.
        visible = await reader.topics()
        assert target.events_topic in visible and target.metrics_topic not in visible, visible
        # What it is for: every partition of events from their ends, as the live watch reads them.
        events = list(await end_offsets(target.kafka_bootstrap_servers, target.events_topic))
        reader.assign(events)
        await reader.seek_to_end(*events)
        for partition in events:
            await reader.position(partition)
        hot = [
            metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=99.0) for _ in range(3)
        ]
        for i, metric in enumerate(hot):  # three warnings in a row raise an event
            metric.reading_time.FromMilliseconds(time.time_ns() // 1_000_000 - 1_000 + i)
        await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=hot), timeout=10)

        async def read_its_event() -> None:
            batches = await reader.getmany(timeout_ms=1000)
            assert any(r.key == sensor_id.encode() for records in batches.values() for r in records)

        await eventually(read_its_event, what="the sensor's event read as the assessor")
    finally:
        await reader.stop()


async def test_only_the_notifier_reaches_the_subscriptions_and_it_nothing_else(target: Target) -> None:
    # The subscriptions hold their webhooks' secrets.
    for account in (credentials.POSTGRES_READER, credentials.POSTGRES_WRITER):
        conn = await asyncpg.connect(target.postgres_dsn_of(account), password=target.password(account))
        try:
            for table in ("notifier.subscriptions", "notifier.deliveries"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetchval(f"SELECT count(*) FROM {table}")
        finally:
            await conn.close()
    account = credentials.POSTGRES_NOTIFIER
    notifier = await asyncpg.connect(target.postgres_dsn_of(account), password=target.password(account))
    try:
        await notifier.fetchval("SELECT count(*) FROM notifier.subscriptions")  # what it is for
        for statement in ("SELECT count(*) FROM readings", "SELECT count(*) FROM events",
                          "CREATE TABLE notifier.not_allowed (x int)", "DROP TABLE notifier.subscriptions"):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await notifier.execute(statement)
    finally:
        await notifier.close()


async def test_only_the_registry_reaches_the_devices_and_it_nothing_else(target: Target) -> None:
    for account in (credentials.POSTGRES_READER, credentials.POSTGRES_WRITER, credentials.POSTGRES_NOTIFIER):
        conn = await asyncpg.connect(target.postgres_dsn_of(account), password=target.password(account))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval("SELECT count(*) FROM registry.devices")
        finally:
            await conn.close()
    account = credentials.POSTGRES_REGISTRY
    registry = await asyncpg.connect(target.postgres_dsn_of(account), password=target.password(account))
    try:
        await registry.fetchval("SELECT count(*) FROM registry.devices")  # what it is for
        for statement in ("SELECT count(*) FROM readings", "SELECT count(*) FROM notifier.subscriptions",
                          "CREATE TABLE registry.not_allowed (x int)", "DELETE FROM registry.devices"):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await registry.execute(statement)
    finally:
        await registry.close()


async def test_the_registry_may_write_the_devices_topic_and_no_other(target: Target) -> None:
    registry = client_options(target.kafka(credentials.KAFKA_REGISTRY))
    producer = AIOKafkaProducer(**registry)
    await producer.start()
    try:
        for topic in (target.metrics_topic, target.events_topic, "rules"):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, b"not allowed")
    finally:
        await producer.stop()
