"""A processor killed between any two steps of a round loses no event and counts no reading twice.

Each test runs a private processor (own topics and group, tests/services.py) with one failpoint
armed, lets it die there, starts a healthy one, and checks the events and the counter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from metrics.v1 import (
    alarms_service_pb2,
    device_pb2,
    devices_service_pb2,
    event_pb2,
    metric_pb2,
    rule_pb2,
    rules_service_pb2,
)
from metrics.v1.alarms_service_pb2_grpc import AlarmsServiceStub
from metrics.v1.devices_service_pb2_grpc import DevicesServiceStub
from metrics.v1.rules_service_pb2_grpc import RulesServiceStub
from processor.stream import alarms, counters
from processor.stream.counters import CLEARED_BY_HAND, alarms_key, legacy_pending_key, pending_key
from runtime import kafka
from runtime.kafka import client_options
from stack import credentials
from tests.helpers import (
    distinct_events,
    only_alarm,
    past_us,
    read_topic,
    rules_in_force,
    send,
    wait_consumed,
)
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

# Records as the contract says they are written: the consumers check the header.
BATCH_HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)

SCENARIO = (10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0)
BASE_US = past_us(10)


async def produce_scenario(
    target: Target,
    topics: Topics,
    sensor_id: str,
    garbage_first: bool = False,
    values: tuple[float, ...] = SCENARIO,
) -> None:
    """One record per reading, as a sensor sending one reading at a time would cause."""
    producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
    await producer.start()
    try:
        if garbage_first:
            await producer.send_and_wait(
                topics.metrics, b"\xff\xfe not protobuf", key=sensor_id.encode(), headers=BATCH_HEADERS
            )
        for i, value in enumerate(values):
            metric = metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=value)
            metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
            batch = metric_pb2.MetricBatch(metrics=[metric])
            await producer.send_and_wait(
                topics.metrics, batch.SerializeToString(), key=sensor_id.encode(), headers=BATCH_HEADERS
            )
    finally:
        await producer.stop()


@pytest.mark.parametrize(
    ("failpoint", "reproduced"),
    [
        # Counters updated and events stored in Redis, nothing produced: produced after the restart.
        ("processor.after_apply", False),
        # Events in Kafka, not yet dropped from Redis: produced again, with the same ids.
        ("processor.after_produce", True),
        # Everything done but the offset commit: the round is redelivered and skipped.
        ("processor.before_commit", False),
    ],
)
async def test_processor_killed_at(
    failpoint: str,
    reproduced: bool,
    target: Target,
    redis_client: aioredis.Redis,
    sensor_id: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "processor.log"
    async with private_topics(target) as topics:
        await produce_scenario(target, topics, sensor_id)
        armed = service_env(target, topics, "processor", {"METRICS_PROCESSOR_FAILPOINTS": failpoint})
        crashing = await start_service("processor", armed, log)
        assert await asyncio.wait_for(crashing.wait(), 60) == -9, log.read_text()
        assert f"failpoint {failpoint} armed" in log.read_text()

        healthy = await start_service("processor", service_env(target, topics, "processor"), log)
        try:
            await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
            records = await read_topic(target.kafka_bootstrap_servers, topics.events, {}, sensor_id.encode())
        finally:
            assert await stop_service(healthy) == 0, log.read_text()

        events = distinct_events(records)
        assert [(e.value, e.reading_time.ToMicroseconds()) for e in events] == [
            (99.0, BASE_US + 3_000_000),
            (98.0, BASE_US + 7_000_000),
        ]
        assert (len(records) > len(events)) is reproduced
        assert await redis_client.hgetall(f"warnings:{{{sensor_id}}}") == {b"temperature": b"3"}
        assert await redis_client.llen(pending_key(sensor_id)) == 0


# For a rule with alarms (temperature >= 95 twice, cleared by two readings below): raised at 97,
# cleared at 5, raised again at 107 and updated by 99.
ALARM_SCENARIO = (10.0, 100.0, 97.0, 10.0, 5.0, 100.0, 107.0, 10.0, 99.0)


@pytest.mark.parametrize(
    "failpoint", ["processor.after_apply", "processor.after_produce", "processor.before_commit"]
)
async def test_processor_killed_while_alarms_are_raised_and_cleared(
    failpoint: str,
    target: Target,
    redis_client: aioredis.Redis,
    rules: Callable[..., Awaitable[dict[str, Any]]],
    rules_topic: str,
    sensor_id: str,
    tmp_path: Path,
) -> None:
    rule = await rules(
        metricType="temperature", sensorIdPrefix=sensor_id, threshold=95, count=2, clearCount=2
    )
    log = tmp_path / "processor.log"
    async with private_topics(target) as topics:
        await produce_scenario(target, topics, sensor_id, values=ALARM_SCENARIO)
        own, _ = processor_of(rules_topic)
        crashing = await start_service("processor", armed(target, topics, own, failpoint), log)
        assert await asyncio.wait_for(crashing.wait(), 60) == -9, log.read_text()
        healthy = await start_service("processor", service_env(target, topics, "processor", own), log)
        try:
            await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
            records = await read_topic(target.kafka_bootstrap_servers, topics.events, {}, sensor_id.encode())
        finally:
            assert await stop_service(healthy) == 0, log.read_text()
        events = distinct_events(records)
        assert [(e.kind, e.value, e.rule_id) for e in events] == [
            (event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, 97.0, rule["ruleId"]),
            (event_pb2.EVENT_KIND_ALARM_CLEARED, 5.0, rule["ruleId"]),
            (event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, 107.0, rule["ruleId"]),
        ]
        assert events[1].alarm_id == events[0].alarm_id != events[2].alarm_id
        active = alarms.Active.parse(await redis_client.hget(alarms_key(sensor_id), rule["ruleId"]))
        assert (active.alarm_id, active.clears, active.matches) == (events[2].alarm_id, 0, 2)
        assert await redis_client.llen(pending_key(sensor_id)) == 0


# Alone: every processor that starts produces the clears by hand left unproduced (Redis's index of
# them is the stack's), so another test's processor starting meanwhile would take this one's.
@pytest.mark.alone
async def test_a_clear_by_hand_killed_before_its_event_is_produced_is_produced_at_the_next_start(
    target: Target,
    redis_client: aioredis.Redis,
    rules: Callable[..., Awaitable[dict[str, Any]]],
    rules_topic: str,
    sensor_id: str,
    tmp_path: Path,
) -> None:
    # An alarm raised by the stack; a private processor clears it by hand and dies after ending it in
    # Redis, before producing its event: the next processor to start produces it.
    await rules(metricType="temperature", sensorIdPrefix=sensor_id, threshold=95, count=1)
    await rules_in_force(target)
    await send(target.envoy_url, sensor_id, "temperature", 99.0)

    alarm_id = await only_alarm(target.envoy_url, sensor_id)
    log = tmp_path / "processor.log"
    async with private_topics(target) as topics:
        own, port = processor_of(rules_topic)
        crashing = await start_service("processor", armed(target, topics, own, "alarms.after_clear"), log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await AlarmsServiceStub(channel).ClearAlarm(
                    alarms_service_pb2.ClearAlarmRequest(alarm_id=alarm_id)
                )
        assert await asyncio.wait_for(crashing.wait(), 60) == -9, log.read_text()
        assert not await redis_client.hgetall(alarms_key(sensor_id)), "ended in Redis before the crash"
        [pending] = await redis_client.lrange(pending_key(sensor_id), 0, -1)
        assert event_pb2.Event.FromString(pending).alarm_id == alarm_id
        clear = f"{sensor_id}|{alarm_id}".encode()
        assert await redis_client.sismember(CLEARED_BY_HAND, clear), "the clear is in the index"

        healthy = await start_service("processor", service_env(target, topics, "processor", own), log)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await serving(channel)  # it has produced the pending events of clears by hand
            records = await read_topic(target.kafka_bootstrap_servers, topics.events, {}, sensor_id.encode())
        finally:
            assert await stop_service(healthy) == 0, log.read_text()
        [record] = records
        event = event_pb2.Event.FromString(record.value)
        assert (event.kind, event.alarm_id, event.alarm.cleared_by) == (
            event_pb2.EVENT_KIND_ALARM_CLEARED, alarm_id, "local",
        )  # fmt: skip
        assert await redis_client.llen(pending_key(sensor_id)) == 0
        assert not await redis_client.sismember(CLEARED_BY_HAND, clear)


async def test_events_left_by_the_previous_version_are_produced_at_start(
    target: Target, redis_client: aioredis.Redis, sensor_id: str, tmp_path: Path
) -> None:
    # The previous version kept pending events per partition, and clears by hand in one list: a
    # processor that starts produces what they still hold, and empties them.
    raised = event_pb2.Event(
        event_id=uuid.uuid4().hex, sensor_id=sensor_id, kind=event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
    )
    cleared = event_pb2.Event(
        event_id=uuid.uuid4().hex, sensor_id=sensor_id, kind=event_pb2.EVENT_KIND_ALARM_CLEARED
    )
    log = tmp_path / "processor.log"
    async with private_topics(target) as topics:
        partition_list = legacy_pending_key(topics.metrics, 1)
        await redis_client.rpush(partition_list, raised.SerializeToString())
        await redis_client.rpush(counters.LEGACY_CLEARED_PENDING, cleared.SerializeToString())
        own, port = processor_of("")
        processor = await start_service("processor", service_env(target, topics, "processor", own), log)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await serving(channel)  # it serves once it has produced them
            records = await read_topic(target.kafka_bootstrap_servers, topics.events, {}, sensor_id.encode())
        finally:
            assert await stop_service(processor) == 0, log.read_text()
            await redis_client.delete(partition_list)
        assert sorted(event_pb2.Event.FromString(r.value).event_id for r in records) == sorted(
            [raised.event_id, cleared.event_id]
        )
        assert await redis_client.llen(partition_list) == 0
        assert cleared.SerializeToString() not in await redis_client.lrange(
            counters.LEGACY_CLEARED_PENDING, 0, -1
        )


async def test_undecodable_record_is_dead_lettered_and_the_partition_flows_on(
    target: Target, redis_client: aioredis.Redis, sensor_id: str, tmp_path: Path
) -> None:
    log = tmp_path / "processor.log"
    async with private_topics(target) as topics:
        await produce_scenario(target, topics, sensor_id, garbage_first=True)
        processor = await start_service("processor", service_env(target, topics, "processor"), log)
        try:
            await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
            dead = await read_topic(target.kafka_bootstrap_servers, topics.dead_letters, {})
            events = await read_topic(target.kafka_bootstrap_servers, topics.events, {}, sensor_id.encode())
        finally:
            assert await stop_service(processor) == 0, log.read_text()
        [record] = dead
        headers = dict(record.headers)
        assert record.value == b"\xff\xfe not protobuf"
        assert record.key == sensor_id.encode()
        assert b"is not a metrics.v1.MetricBatch" in headers["dead-letter-reason"]
        assert headers["dead-letter-source"].startswith(f"{topics.metrics}[".encode())
        assert headers["dead-letter-consumer"] == topics.group.encode()
        assert [event_pb2.Event.FromString(r.value).value for r in events] == [99.0, 98.0]
        assert await redis_client.hgetall(f"warnings:{{{sensor_id}}}") == {b"temperature": b"3"}


async def test_a_rule_change_published_but_not_committed_is_taken_back(
    target: Target, rules_topic: str, sensor_id: str, tmp_path: Path
) -> None:
    # A processor dies between publishing a new rule on its rules topic and committing it to
    # PostgreSQL; the next one to start makes the topic hold what PostgreSQL does: no such rule.
    log = tmp_path / "processor.log"
    async with private_topics(target) as topics:
        own, port = processor_of(rules_topic)
        crashing = await start_service("processor", armed(target, topics, own, "rules.before_commit"), log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
            rule = rule_pb2.Rule(metric_type="temperature", threshold=1000, sensor_id_prefix=sensor_id)
            with pytest.raises(grpc.aio.AioRpcError):
                await RulesServiceStub(channel).CreateRule(rules_service_pb2.CreateRuleRequest(rule=rule))
        assert await asyncio.wait_for(crashing.wait(), 60) == -9, log.read_text()
        published = [r for r in await read_topic(target.kafka_bootstrap_servers, rules_topic, {}) if r.value]
        made = [
            r.key.decode()
            for r in published
            if rule_pb2.Rule.FromString(r.value).sensor_id_prefix == sensor_id
        ]
        assert len(made) == 1, "the rule was published before the crash"
        # The rules are the processor's: only its role reads them.
        processor_role = credentials.POSTGRES_PROCESSOR
        async with asyncpg.create_pool(
            target.postgres_dsn_of(processor_role), password=target.password(processor_role)
        ) as db:
            assert await db.fetchval("SELECT count(*) FROM rules WHERE rule_id = $1", made[0]) == 0

        healthy = await start_service("processor", service_env(target, topics, "processor", own), log)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await serving(channel)  # it serves once its rules topic holds what PostgreSQL does
        finally:
            assert await stop_service(healthy) == 0
        last = [
            r
            for r in await read_topic(target.kafka_bootstrap_servers, rules_topic, {})
            if r.key == made[0].encode()
        ][-1]
        assert last.value is None, "the topic's last word on the rule is its deletion"


async def test_a_device_published_but_not_committed_is_taken_back(target: Target, tmp_path: Path) -> None:
    # A registry dies between publishing a new device on its devices topic and committing it to
    # PostgreSQL; the next one to start makes the topic hold what PostgreSQL does: no such device.
    topic, device_id = f"test-devices-{uuid.uuid4().hex[:10]}", f"crash-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(**client_options(target.kafka()))
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    log, port = tmp_path / "registry.log", free_port()
    own = {"METRICS_REGISTRY_DEVICES_TOPIC": topic, "METRICS_REGISTRY_GRPC_PORT": str(port)}
    try:
        armed_env = service_env(
            target, None, "registry", {**own, "METRICS_REGISTRY_FAILPOINTS": "registry.before_commit"}
        )
        crashing = await start_service("registry", armed_env, log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await DevicesServiceStub(channel).CreateDevice(
                    devices_service_pb2.CreateDeviceRequest(device_id=device_id, device=device_pb2.Device())
                )
        assert await asyncio.wait_for(crashing.wait(), 60) == -9, log.read_text()
        published = await read_topic(target.kafka_bootstrap_servers, topic, {}, device_id.encode())
        assert [r.value is not None for r in published] == [True], "the device was published before the crash"
        # The devices are the registry's: only its role reads them.
        role = credentials.POSTGRES_REGISTRY
        async with asyncpg.create_pool(target.postgres_dsn_of(role), password=target.password(role)) as db:
            assert (
                await db.fetchval("SELECT count(*) FROM registry.devices WHERE device_id = $1", device_id)
                == 0
            )

        healthy = await start_service("registry", service_env(target, None, "registry", own), log)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await serving(channel)  # it serves once its devices topic holds what PostgreSQL does
        finally:
            assert await stop_service(healthy) == 0
        last = (await read_topic(target.kafka_bootstrap_servers, topic, {}, device_id.encode()))[-1]
        assert last.value is None, "the topic's last word on the device is its deletion"
    finally:
        await admin.delete_topics([topic])
        await admin.close()


def processor_of(rules_topic: str) -> tuple[dict[str, str], int]:
    """The settings of a private processor that takes its rules from `rules_topic` and serves its
    API on a port of its own, and that port."""
    port = free_port()
    return {"METRICS_PROCESSOR_RULES_TOPIC": rules_topic, "METRICS_PROCESSOR_GRPC_PORT": str(port)}, port


def armed(target: Target, topics: Topics, own: dict[str, str], failpoint: str) -> dict[str, str]:
    """The environment of that processor with `failpoint` armed."""
    return service_env(target, topics, "processor", {**own, "METRICS_PROCESSOR_FAILPOINTS": failpoint})
