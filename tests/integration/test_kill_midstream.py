"""kill -9 of the processor or the saver while sensors stream: after supervisord restarts it, the
stored readings and events, and the Redis counters, are exactly what the rules say they must be."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from processor.rules import Rule
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from testkit.rules_model import apply
from tests.helpers import eventually, past_us, wait_consumed
from tests.target import Target

SENSORS = 8
BATCHES = 30
BATCH = 10
BASE_US = past_us(14)
RULES = {"temperature": Rule("temperature", 95.0, 3)}

pytestmark = pytest.mark.local_stack


def stream(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.choice((50.0, 96.0, 99.5, 120.0)) for _ in range(BATCHES * BATCH)]


async def kill(name: str) -> int:
    """kill -9 a part of the local stack; returns its PID. supervisord starts it again."""
    with Supervisor(stack_settings.load()) as supervisor:
        pid = int(supervisor.processes()[name]["pid"])
        assert pid > 0, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)

        async def restarted() -> None:
            info = supervisor.processes()[name]
            assert info["statename"] == "RUNNING" and info["pid"] not in (0, pid), info

        await eventually(restarted, timeout=30)
    return pid


@pytest.mark.parametrize("victim", ["processor", "saver"])
async def test_kill_while_streaming(
    victim: str, receiver: ReceiverServiceStub, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    sensors = [f"kill-{victim}-{i}-{uuid.uuid4().hex[:8]}" for i in range(SENSORS)]
    values = {sensor: stream(i) for i, sensor in enumerate(sensors)}
    sent = asyncio.Event()
    acked = 0

    async def sensor_stream(sensor: str) -> None:
        nonlocal acked
        for b in range(BATCHES):
            metrics = []
            for i in range(b * BATCH, (b + 1) * BATCH):
                metric = metric_pb2.Metric(
                    sensor_id=sensor, metric_type="temperature", value=values[sensor][i]
                )
                metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
                metrics.append(metric)
            await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=metrics), timeout=30)
            acked += 1
            if acked == SENSORS * BATCHES // 3:
                sent.set()
            await asyncio.sleep(0.02)

    async def killer() -> None:
        await sent.wait()
        await kill(victim)

    await asyncio.gather(killer(), *(sensor_stream(s) for s in sensors))
    assert acked == SENSORS * BATCHES

    for group, topic in (("processor", "metrics"), ("saver", "metrics"), ("saver", "events")):
        await wait_consumed(target.kafka_bootstrap_servers, group, topic, timeout=90)

    for sensor in sensors:
        counters: dict[tuple[str, str], int] = {}
        readings = [(sensor, "temperature", v) for v in values[sensor]]
        raised = apply(counters, RULES, readings)
        expected_events = [(values[sensor][i], BASE_US + i * 1_000_000) for i in raised]

        rows = await db.fetch(
            "SELECT value, reading_time FROM readings WHERE sensor_id = $1 ORDER BY reading_time", sensor
        )
        assert [(r["value"], r["reading_time"]) for r in rows] == [
            (v, BASE_US + i * 1_000_000) for i, v in enumerate(values[sensor])
        ]
        events = await db.fetch(
            "SELECT value, reading_time FROM events WHERE sensor_id = $1 ORDER BY reading_time", sensor
        )
        assert [(r["value"], r["reading_time"]) for r in events] == expected_events
        count = await redis_client.hget(f"warnings:{{{sensor}}}", "temperature")
        assert int(count or 0) == counters[(sensor, "temperature")]
        rollup = await db.fetchval("SELECT sum(count) FROM rollups_minute WHERE sensor_id = $1", sensor)
        assert rollup == BATCHES * BATCH
