"""The processor's counters in the real Redis hold to the reference model of the rules
(processor/rules.py), with several rules, sensors and types, and when batches are redelivered: in
the stack's Redis, and in a Redis Cluster of the tests' own (tests/integration/conftest.py), with
the sensors on every master."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.v1 import event_pb2, metric_pb2, rule_pb2
from processor.rules import Rule, parse_rules
from processor.stream import alarms
from processor.stream.counters import Counters, alarms_key, counter_key, pending_key, sensor_keys
from processor.stream.redis_nodes import RedisNodes
from processor.stream.rounds import script_args
from runtime import kafka
from runtime.kafka import client_options
from runtime.records import checked
from stack import credentials
from testkit.rules_model import apply, apply_as_arrived
from tests.helpers import past_us, read_topic, wait_consumed
from tests.services import private_topics, service_env, start_service, stop_service
from tests.target import Target

# Records as the contract says they are written: the consumers check the header.
BATCH_HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)

RULES = parse_rules(["temperature:95:3", "humidity:80:2"])
BASE_US = past_us(6)

SENSORS = ("a", "b", "c")
readings = st.lists(
    st.tuples(
        st.sampled_from(SENSORS),
        st.sampled_from(["temperature", "humidity", "pressure"]),
        st.sampled_from([10.0, 79.9, 80.0, 94.9, 95.0, 120.0]),
        # Mostly increasing, with repeated and late times among them.
        st.one_of(st.just(None), st.integers(0, 60)),
    ),
    min_size=1,
    max_size=40,
)


def as_metrics(
    readings: list[tuple[str, str, float, int | None]], sensors: dict[str, str]
) -> list[metric_pb2.Metric]:
    """The drawn readings as the processor reads them: a time drawn, or two µs apart in order."""
    metrics = []
    for i, (sensor, metric_type, value, time) in enumerate(readings):
        metric = metric_pb2.Metric(sensor_id=sensors[sensor], metric_type=metric_type, value=value)
        metric.reading_time.FromMicroseconds(BASE_US + (2 * i if time is None else time))
        metrics.append(metric)
    return metrics


async def applied(
    counters: Counters, metrics: list[metric_pb2.Metric], rules: Any, rounds: list[tuple[int, int, bool]]
) -> list[bytes]:
    """Applies the readings round by round, as the processor does, and returns the entries it would
    produce, each once (the same bytes again are the same event). A round not `confirmed` dies after
    producing, before removing what it produced: the next round (its redelivery) returns them again."""
    detect = timestamp_pb2.Timestamp()
    produced: dict[bytes, None] = {}
    for start, end, confirmed in rounds:
        args: list[object] = []
        script_args(args, checked(metrics[start:end]), metrics[start:end], rules, detect, {})
        entries = await counters.apply(0, dict.fromkeys(m.sensor_id for m in metrics[start:end]), args)  # type: ignore[arg-type]
        produced.update(dict.fromkeys(e for _, sensor_entries in entries for e in sensor_entries))
        if confirmed:
            await counters.confirm(entries)
    return list(produced)


def rounds_of(count: int, cuts: list[int], replays: list[int]) -> list[tuple[int, int, bool]]:
    """(start, end, confirmed) of the rounds `count` readings are applied in, split at `cuts`; a
    round in `replays` dies before confirming what it produced and is applied again right after
    itself (Kafka's redelivery; or a client's resend)."""
    bounds = sorted({0, count, *(c for c in cuts if c < count)})
    rounds = list(itertools.pairwise(bounds))
    order = [*range(len(rounds))]
    for r in replays:
        if r < len(rounds):
            order.insert(order.index(r) + 1, r)
    return [(*rounds[r], i + 1 == len(order) or order[i + 1] != r) for i, r in enumerate(order)]


@pytest.fixture(params=["server", "cluster"])
async def store(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, target: Target
) -> AsyncIterator[Store]:
    """The counters' Redis as the processor uses it, and an admin's client of it: the stack's
    Redis, or the tests' Redis Cluster as the processor's user, waiting for a replica of each write."""
    if request.param == "server":
        yield Store(
            RedisNodes(redis_client, target.redis_url, target.password(credentials.REDIS_ADMIN)), redis_client
        )
        return
    cluster = request.getfixturevalue("redis_cluster")
    nodes, admin = cluster.nodes(processor=True), cluster.nodes()
    await nodes.start()
    await admin.start()
    try:
        yield Store(nodes, admin.client)
    finally:
        await nodes.aclose()
        await admin.aclose()


@dataclass(frozen=True)
class Store:
    nodes: RedisNodes
    admin: Any  # a plain or a cluster client

    def sensors(self, prefix: str) -> dict[str, str]:
        """Ids for the drawn sensors; on a cluster, each on another master."""
        if not self.nodes.cluster:
            return {s: f"{prefix}-{s}" for s in SENSORS}
        ids: dict[str, str] = {}
        taken: set[str] = set()
        i = 0
        while len(ids) < len(SENSORS):
            sensor = f"{prefix}-{i}"
            [node] = self.nodes.group([sensor])
            if node not in taken:
                taken.add(node)
                ids[SENSORS[len(ids)]] = sensor
            i += 1
        return ids

    async def delete(self, sensors: Iterable[str]) -> None:
        for sensor in sensors:
            await self.admin.delete(*sensor_keys(sensor))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    readings=readings,
    cuts=st.lists(st.integers(0, 40), max_size=4),
    replays=st.lists(st.integers(0, 4), max_size=3),
)
async def test_script_matches_the_model_through_redelivery_and_late_readings(
    store: Store,
    readings: list[tuple[str, str, float, int | None]],
    cuts: list[int],
    replays: list[int],
) -> None:
    # Readings applied in rounds split at `cuts` as the processor does; some rounds die after
    # producing their events and are applied again, as Kafka redelivers them: they change nothing
    # and their events are produced again, the same. Some readings repeat an earlier time or come
    # late (older than one already applied). Events (in each sensor's order) and counters: the
    # model's (rules.apply_as_arrived), however the readings were batched; nothing left pending.
    counters = Counters(store.nodes)
    sensors = store.sensors(f"prop-{uuid.uuid4().hex[:8]}")
    metrics = as_metrics(readings, sensors)
    try:
        pending = await applied(counters, metrics, RULES, rounds_of(len(metrics), cuts, replays))
        events = [event_pb2.Event.FromString(e) for e in pending]
        model: dict[tuple[str, str], int] = {}
        timed = [(m.sensor_id, m.metric_type, m.value, m.reading_time.ToMicroseconds()) for m in metrics]
        raised = apply_as_arrived(model, {}, RULES, timed)
        for sensor in sensors.values():
            assert [
                (e.metric_type, e.reading_time.ToMicroseconds()) for e in events if e.sensor_id == sensor
            ] == [(timed[i][1], timed[i][3]) for i in raised if timed[i][0] == sensor]
            stored = await store.admin.hgetall(counter_key(sensor))
            expected = {t: n for (s, t), n in model.items() if s == sensor}
            assert {k.decode(): int(v) for k, v in stored.items()} == {
                t: n for t, n in expected.items() if n or t.encode() in stored
            }
            assert await store.admin.llen(pending_key(sensor)) == 0
        assert len(events) == len(raised)
    finally:
        await store.delete(sensors.values())


# Rules made at run time raise alarms: one with a count and a clear count, one with a duration.
ALARM_RULES = [
    Rule("temperature", 95, 2, rule_id="r-hot", clear_count=2),
    Rule(
        "temperature",
        80,
        1,
        comparison=rule_pb2.COMPARISON_LESS,
        rule_id="r-cold",
        duration_us=20,
        clear_count=1,
    ),
    *RULES.values(),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    readings=readings,
    cuts=st.lists(st.integers(0, 40), max_size=4),
    replays=st.lists(st.integers(0, 4), max_size=3),
)
async def test_alarms_match_the_model_through_redelivery_and_late_readings(
    store: Store,
    readings: list[tuple[str, str, float, int | None]],
    cuts: list[int],
    replays: list[int],
) -> None:
    # As above, with rules that raise alarms: the events raised and cleared, in order, and the
    # active alarms left in Redis (consecutive clears, matches) are the model's.
    counters = Counters(store.nodes)
    sensors = store.sensors(f"prop-{uuid.uuid4().hex[:8]}")
    metrics = as_metrics(readings, sensors)
    try:
        pending = await applied(counters, metrics, ALARM_RULES, rounds_of(len(metrics), cuts, replays))
        events = [event_pb2.Event.FromString(alarms.produced(e)) for e in pending]
        timed = [(m.sensor_id, m.metric_type, m.value, m.reading_time.ToMicroseconds()) for m in metrics]
        model_alarms: dict[tuple[str, str], list[int]] = {}
        cleared: list[int] = []
        raised = apply_as_arrived({}, {}, ALARM_RULES, timed, {}, model_alarms, cleared)
        # The model lists raises and clears apart: compared as a multiset of (kind, sensor, time).
        expected = sorted(
            [(i, event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED) for i in raised]
            + [(i, event_pb2.EVENT_KIND_ALARM_CLEARED) for i in cleared]
        )
        got = [(e.kind, e.sensor_id, e.reading_time.ToMicroseconds()) for e in events]
        assert sorted(got) == sorted((kind, timed[i][0], timed[i][3]) for i, kind in expected)
        for event in events:
            if event.rule_id.startswith("r-"):
                assert event.alarm_id and event.alarm.alarm_id == event.alarm_id
            else:
                assert not event.alarm_id and not event.HasField("alarm"), "configured rules raise no alarms"
        active = {}
        for sensor in sensors.values():
            for rule_id, state in (await store.admin.hgetall(alarms_key(sensor))).items():
                kept = alarms.Active.parse(state)
                active[(sensor, rule_id.decode())] = [kept.clears, kept.matches]
            assert await store.admin.llen(pending_key(sensor)) == 0
        assert active == model_alarms
    finally:
        await store.delete(sensors.values())


async def test_several_rules_sensors_and_types_end_to_end(
    target: Target, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # A processor configured with two rules reads interleaved records of three sensors and three
    # types (one without a rule): its events and counters are the model's.
    rng = random.Random(5)
    run = uuid.uuid4().hex[:8]
    sensors = [f"rules-{run}-{i}" for i in range(3)]
    stream = [(rng.choice(sensors), rng.choice(["temperature", "humidity", "pressure"]),
               rng.choice([10.0, 85.0, 99.0])) for _ in range(300)]  # fmt: skip
    async with private_topics(target) as topics:
        producer = AIOKafkaProducer(**client_options(target.kafka()), acks="all")
        await producer.start()
        try:
            for i, (sensor, metric_type, value) in enumerate(stream):
                metric = metric_pb2.Metric(sensor_id=sensor, metric_type=metric_type, value=value)
                metric.reading_time.FromMicroseconds(BASE_US + i)
                batch = metric_pb2.MetricBatch(metrics=[metric]).SerializeToString()
                await producer.send(topics.metrics, batch, key=sensor.encode(), headers=BATCH_HEADERS)
            await producer.flush()
        finally:
            await producer.stop()
        env = service_env(
            target, topics, "processor", {"METRICS_PROCESSOR_RULES": "temperature:95:3,humidity:80:2"}
        )
        processor = await start_service("processor", env, tmp_path / "processor.log")
        try:
            await wait_consumed(target.kafka_bootstrap_servers, topics.group, topics.metrics)
            records = await read_topic(target.kafka_bootstrap_servers, topics.events, {})
        finally:
            assert await stop_service(processor) == 0
    model: dict[tuple[str, str], int] = {}
    raised = apply(model, RULES, stream)
    events = sorted((e.sensor_id, e.metric_type, e.reading_time.ToMicroseconds() - BASE_US)
                    for e in (event_pb2.Event.FromString(r.value) for r in records))  # fmt: skip
    assert events == sorted((stream[i][0], stream[i][1], i) for i in raised)
    assert {e[1] for e in events} == {"temperature", "humidity"}
    for sensor in sensors:
        assert await counts(redis_client, sensor) == nonzero(model, sensor)


async def counts(client: aioredis.Redis, sensor: str) -> dict[str, int]:
    """A sensor's counters in Redis; a field absent and a field at 0 both mean 0 (the contract)."""
    stored = await client.hgetall(counter_key(sensor))
    return {k.decode(): int(v) for k, v in stored.items() if int(v)}


def nonzero(model: dict[tuple[str, str], int], sensor: str) -> dict[str, int]:
    return {t: n for (s, t), n in model.items() if s == sensor and n}
