"""The processor's counters in the real Redis hold to the reference model of the rules
(processor/rules.py), with several rules, sensors and types, and when batches are redelivered."""

from __future__ import annotations

import itertools
import random
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.v1 import event_pb2, metric_pb2, rule_pb2
from processor import alarms
from processor.counters import Counters, alarms_key, counter_key, warning_since_key
from processor.rules import Rule, apply, apply_as_arrived, parse_rules
from processor.service import script_args
from runtime import kafka
from runtime.kafka import client_options
from tests.helpers import read_topic, wait_consumed
from tests.services import private_topics, service_env, start_service, stop_service
from tests.target import Target

# Records as the contract says they are written: the consumers check the header.
BATCH_HEADERS = kafka.headers(kafka.METRIC_BATCH_TYPE)

RULES = parse_rules(["temperature:95:3", "humidity:80:2"])
BASE_US = 1_770_000_000_000_000

readings = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
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
    counters: Counters, metrics: list[metric_pb2.Metric], rules: Any, rounds: list[tuple[int, int]]
) -> list[bytes]:
    """Applies the readings round by round, as the processor does; the entries left to produce."""
    detect = timestamp_pb2.Timestamp()
    for start, end in rounds:
        args: list[object] = []
        script_args(args, metrics[start:end], rules, detect, {})
        if args:
            await counters.apply(0, 0, args)
    return await counters.pending(0)


def rounds_of(count: int, cuts: list[int], replays: list[int]) -> list[tuple[int, int]]:
    """(start, end) of the rounds `count` readings are applied in, split at `cuts`; a round in
    `replays` is applied again right after itself (Kafka's redelivery, a client's resend)."""
    bounds = sorted({0, count, *(c for c in cuts if c < count)})
    rounds = list(itertools.pairwise(bounds))
    order = [*range(len(rounds))]
    for r in replays:
        if r < len(rounds):
            order.insert(order.index(r) + 1, r)
    return [rounds[r] for r in order]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    readings=readings,
    cuts=st.lists(st.integers(0, 40), max_size=4),
    replays=st.lists(st.integers(0, 4), max_size=3),
)
async def test_script_matches_the_model_through_redelivery_and_late_readings(
    redis_client: aioredis.Redis,
    readings: list[tuple[str, str, float, int | None]],
    cuts: list[int],
    replays: list[int],
) -> None:
    # Readings applied in rounds split at `cuts` as the processor does; some rounds are applied
    # again, as Kafka redelivers after a failure or a client resends: they change nothing. Some
    # readings repeat an earlier time or come late (older than one already applied). Events and
    # counters: the model's (rules.apply_as_arrived), however the readings were batched.
    run = uuid.uuid4().hex[:8]
    counters = Counters(redis_client, f"test-{run}")
    sensors = {s: f"prop-{run}-{s}" for s in ("a", "b")}
    metrics = as_metrics(readings, sensors)
    try:
        pending = await applied(counters, metrics, RULES, rounds_of(len(metrics), cuts, replays))
        events = [event_pb2.Event.FromString(e) for e in pending]
        model: dict[tuple[str, str], int] = {}
        timed = [(m.sensor_id, m.metric_type, m.value, m.reading_time.ToMicroseconds()) for m in metrics]
        raised = apply_as_arrived(model, {}, RULES, timed)
        assert [(e.sensor_id, e.metric_type, e.reading_time.ToMicroseconds()) for e in events] == [
            (timed[i][0], timed[i][1], timed[i][3]) for i in raised
        ]
        for sensor in sensors.values():
            stored = await redis_client.hgetall(counter_key(sensor))
            expected = {t: n for (s, t), n in model.items() if s == sensor}
            assert {k.decode(): int(v) for k, v in stored.items()} == {
                t: n for t, n in expected.items() if n or t.encode() in stored
            }
    finally:
        await redis_client.delete(*(counter_key(s) for s in sensors.values()), counters.pending_key(0),
                                  *(f"last-reading:{{{s}}}" for s in sensors.values()))  # fmt: skip


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
    redis_client: aioredis.Redis,
    readings: list[tuple[str, str, float, int | None]],
    cuts: list[int],
    replays: list[int],
) -> None:
    # As above, with rules that raise alarms: the events raised and cleared, in order, and the
    # active alarms left in Redis (consecutive clears, matches) are the model's.
    run = uuid.uuid4().hex[:8]
    counters = Counters(redis_client, f"test-{run}")
    sensors = {s: f"prop-{run}-{s}" for s in ("a", "b")}
    metrics = as_metrics(readings, sensors)
    keys = [k for s in sensors.values() for k in (counter_key(s), alarms_key(s), warning_since_key(s),
                                                  f"last-reading:{{{s}}}")]  # fmt: skip
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
            for rule_id, state in (await redis_client.hgetall(alarms_key(sensor))).items():
                kept = alarms.Active.parse(state)
                active[(sensor, rule_id.decode())] = [kept.clears, kept.matches]
        assert active == model_alarms
    finally:
        await redis_client.delete(*keys, counters.pending_key(0))


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
