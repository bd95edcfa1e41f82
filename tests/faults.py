"""Faults under a steady load, for the fault tests of either topology (test_faults.py,
test_cluster.py).

The load is deterministic sensors that send in order and resend a batch until it is acknowledged,
as a careful client would. After each fault, with nothing restarted by hand but what supervisord
restarts by itself: every acknowledged reading is in PostgreSQL exactly once, the events are the
set the rules model computes from the readings, and so are the alarms of a rule with alarms (raised,
cleared, stored, the active ones in Redis), the Redis counters are the model's, and the clients saw
only retryable statuses.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import grpc
import redis.asyncio as aioredis
from google.protobuf import json_format

from metrics.v1 import event_pb2, metric_pb2, receiver_service_pb2, rule_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from processor.rules import Rule
from processor.stream import alarms
from processor.stream.counters import alarms_key
from stack import probes
from stack import settings as stack_settings
from stack.parts import parts
from stack.settings import PUBLIC_SERVICES, ROOT
from stack.supervisor import Supervisor
from testkit.http import http
from testkit.rules_model import apply, apply_as_arrived
from tests.helpers import end_offsets, past_us, rules_in_force, wait_consumed
from tests.target import Target

RULES = {"temperature": Rule("temperature", 95.0, 3)}
PARTS = {part.name: part for part in parts(stack_settings.load())}
# A rule with alarms over the same readings (made through RulesService for each load's sensors).
ALARM_RULE = {"metricType": "temperature", "threshold": 99, "count": 2, "clearCount": 2}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
BASE_US = past_us(0)
RAISED = event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
CLEARED = event_pb2.EVENT_KIND_ALARM_CLEARED


@dataclass
class Load:
    """`sensors` sensors, each sending `batches` batches of `size` readings in order, every `pause_s`."""

    sensors: int = 6
    batches: int = 40
    size: int = 10
    pause_s: float = 0.1
    # When set, each sensor stops after the batch it is sending (at most `batches` in all).
    until: asyncio.Event | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acked: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    alarm_rule: Rule | None = None
    # Batches acknowledged, per sensor.
    sent: dict[str, int] = field(default_factory=dict)
    # The longest call, and the longest wait for an acknowledgement (calls refused and sent again).
    longest_call_s: float = 0.0
    longest_ack_s: float = 0.0

    def __post_init__(self) -> None:
        rng = random.Random(self.run)
        self.prefix = f"fault-{self.run}-"
        self.ids = [f"{self.prefix}{i}" for i in range(self.sensors)]
        self.values = {s: [rng.choice((20.0, 96.0, 99.0, 120.0)) for _ in range(self.batches * self.size)]
                       for s in self.ids}  # fmt: skip

    def request(self, sensor: str, b: int) -> receiver_service_pb2.PushMetricsRequest:
        metrics = []
        for i in range(b * self.size, (b + 1) * self.size):
            metric = metric_pb2.Metric(
                sensor_id=sensor, metric_type="temperature", value=self.values[sensor][i]
            )
            metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
            metrics.append(metric)
        return receiver_service_pb2.PushMetricsRequest(metrics=metrics)

    async def send(self, target: Target, progress: asyncio.Event) -> None:
        async def sensor_loop(stub: ReceiverServiceStub, sensor: str) -> None:
            for b in range(self.batches):
                if self.until is not None and self.until.is_set():
                    break
                request = self.request(sensor, b)
                delay = 0.1
                first = time.monotonic()
                while True:
                    began = time.monotonic()
                    try:
                        await stub.PushMetrics(request, timeout=10)
                        break
                    except grpc.aio.AioRpcError as error:
                        name = error.code().name
                        self.statuses[name] = self.statuses.get(name, 0) + 1
                        if error.code() not in RETRYABLE:
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                    finally:
                        self.longest_call_s = max(self.longest_call_s, time.monotonic() - began)
                self.longest_ack_s = max(self.longest_ack_s, time.monotonic() - first)
                self.acked += 1
                self.sent[sensor] = b + 1
                if self.acked >= self.progress_at:
                    progress.set()
                await asyncio.sleep(self.pause_s)

        # One channel per sensor: a fault of Envoy breaks connections, and gRPC reconnects by itself.
        channels = [grpc.aio.insecure_channel(target.envoy) for _ in self.ids]
        try:
            await asyncio.gather(
                *(sensor_loop(ReceiverServiceStub(c), s) for c, s in zip(channels, self.ids, strict=True))
            )
        finally:
            for channel in channels:
                await channel.close()

    @property
    def progress_at(self) -> int:
        """Acknowledged batches before the fault: a third of them, or a few seconds' worth."""
        return min(self.sensors * self.batches // 3, self.sensors * 30)

    async def check(self, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis) -> None:
        if self.until is None:
            assert self.acked == self.sensors * self.batches
        assert sum(self.sent.values()) == self.acked
        for group, topic in (("processor", "metrics"), ("saver", "metrics"), ("saver", "events")):
            await wait_consumed(target.kafka_bootstrap_servers, group, topic, timeout=120)
        for sensor in self.ids:
            values = self.values[sensor][: self.sent.get(sensor, 0) * self.size]
            rows = await db.fetch(
                "SELECT reading_time, value FROM readings WHERE sensor_id = $1 ORDER BY 1", sensor
            )
            assert [(r["reading_time"], r["value"]) for r in rows] == [
                (BASE_US + i * 1_000_000, v) for i, v in enumerate(values)
            ], f"{sensor}: stored readings"
            model: dict[tuple[str, str], int] = {}
            raised = apply(model, RULES, [(sensor, "temperature", v) for v in values])
            events = await db.fetch(
                "SELECT reading_time FROM events WHERE sensor_id = $1 AND rule_id = 'temperature' ORDER BY 1",
                sensor,
            )
            assert [r["reading_time"] for r in events] == [BASE_US + i * 1_000_000 for i in raised], (
                f"{sensor}: events"
            )
            count = await redis_client.hget(f"warnings:{{{sensor}}}", "temperature")
            assert int(count or 0) == model[(sensor, "temperature")], f"{sensor}: counter"
            if self.alarm_rule is not None:
                await self.check_alarms(db, redis_client, sensor, values)
            rollup = await db.fetchval("SELECT sum(count) FROM rollups_minute WHERE sensor_id = $1", sensor)
            assert rollup == len(values), f"{sensor}: rollups"
        assert set(self.statuses) <= {c.name for c in RETRYABLE}, self.statuses

    async def check_alarms(
        self, db: asyncpg.Pool, redis_client: aioredis.Redis, sensor: str, values: list[float]
    ) -> None:
        """The alarm rule's raises and clears, stored alarms and the active one in Redis: the model's."""
        assert self.alarm_rule is not None
        rule_id = self.alarm_rule.rule_id
        active: dict[tuple[str, str], list[int]] = {}
        cleared: list[int] = []
        timed = [(sensor, "temperature", v, i) for i, v in enumerate(values)]
        raised = apply_as_arrived({}, {}, [self.alarm_rule], timed, None, active, cleared)
        events = await db.fetch(
            "SELECT kind, reading_time FROM events WHERE sensor_id = $1 AND rule_id = $2 ORDER BY 2, 1",
            sensor, rule_id,
        )  # fmt: skip
        expected = sorted([(BASE_US + i * 1_000_000, RAISED) for i in raised]
                          + [(BASE_US + i * 1_000_000, CLEARED) for i in cleared])  # fmt: skip
        assert [(r["reading_time"], r["kind"]) for r in events] == expected, f"{sensor}: alarm events"
        stored = await db.fetchrow(
            "SELECT count(*) AS alarms, count(*) FILTER (WHERE clear_time IS NULL) AS active FROM alarms "
            "WHERE sensor_id = $1 AND rule_id = $2",
            sensor, rule_id,
        )  # fmt: skip
        assert (stored["alarms"], stored["active"]) == (len(raised), len(active)), f"{sensor}: alarms"
        state = await redis_client.hget(alarms_key(sensor), rule_id)
        kept = (
            None if state is None else [alarms.Active.parse(state).clears, alarms.Active.parse(state).matches]
        )
        assert kept == active.get((sensor, rule_id)), f"{sensor}: the active alarm in Redis"


async def healthy(name: str) -> None:
    settings = stack_settings.load()
    part = PARTS[name]
    try:
        await probes.probe(settings, part)
        if part.what in PUBLIC_SERVICES:
            await probes.service_via_envoy(settings, part.what)
    except Exception as error:
        raise AssertionError(f"{name}: {error}") from error


async def during_load(
    target: Target,
    db: asyncpg.Pool,
    redis_client: aioredis.Redis,
    fault: Callable[[], Awaitable[None]],
    load: Load | None = None,
) -> Load:
    load = load or Load()
    progress = asyncio.Event()
    dead_before = await end_offsets(target.kafka_bootstrap_servers, target.dead_letter_topic)
    status, rule = await http(
        "POST", f"{target.envoy_url}/v1/rules", {**ALARM_RULE, "sensorIdPrefix": load.prefix}
    )
    assert status == 200, rule
    load.alarm_rule = Rule.of(json_format.ParseDict(rule, rule_pb2.Rule()))
    await rules_in_force(target)

    async def inject() -> None:
        await progress.wait()
        await fault()

    try:
        await asyncio.gather(load.send(target, progress), inject())
        await load.check(target, db, redis_client)
    finally:
        await http("DELETE", f"{target.envoy_url}/v1/rules/{rule['ruleId']}")
    # An outage is not a bad record: nothing was dead-lettered meanwhile.
    assert await end_offsets(target.kafka_bootstrap_servers, target.dead_letter_topic) == dead_before
    return load


def pid_of(name: str) -> int:
    with Supervisor(stack_settings.load()) as supervisor:
        return int(supervisor.processes()[name]["pid"])


async def ingest_goes_on(
    target: Target,
    db: asyncpg.Pool,
    redis_client: aioredis.Redis,
    fault: Callable[[], Awaitable[None]],
    what: str,
    load: Load | None = None,
) -> Load:
    """during_load, with the load going on until the fault is over (its injection to the part back
    in service): batches must have been acknowledged meanwhile, not only all stored after it."""
    finished = asyncio.Event()
    load = load or Load(batches=5_000)
    load.until = finished
    acked: dict[str, int] = {}

    async def inject() -> None:
        acked["before"] = load.acked
        began = time.monotonic()
        try:
            await fault()
        finally:
            finished.set()
        acked["during"] = load.acked - acked["before"]
        print(f"{what}: {time.monotonic() - began:.1f} s; batches acknowledged meanwhile: {acked['during']}")

    await during_load(target, db, redis_client, inject, load)
    print(
        f"refused calls: {load.statuses or 'none'}; longest call {load.longest_call_s:.2f} s, "
        f"longest wait for an acknowledgement {load.longest_ack_s:.2f} s; {load.acked} batches in all"
    )
    assert acked["during"] > 0, f"no batch was acknowledged during {what}"
    return load


async def upgrade_under_load(target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis) -> Load:
    """`make upgrade ARGS=--all` under the load, which goes on until the upgrade is done; checked
    as after any fault, and no call was refused or waited long."""

    async def upgrade() -> None:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "stack", "upgrade", "--all"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        print(result.stdout)

    load = await ingest_goes_on(target, db, redis_client, upgrade, "the upgrade")
    # Each instance was drained before it stopped: the calls went to another (or to a standby).
    assert not load.statuses, f"calls refused during the upgrade: {load.statuses}"
    assert load.longest_ack_s < MAX_ACK_WAIT_S, f"a batch waited {load.longest_ack_s:.1f} s"
    return load


# What a client may wait for an acknowledgement during an upgrade (docs/operations/upgrades.md).
MAX_ACK_WAIT_S = 2.0
