"""A simulated fleet's data can be removed, as the benchmark does after each run: every row and
Redis key of the sensors with the fleet's id prefix, and nothing of any other sensor."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from metrics.v1 import receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from processor.stream import counters
from saver import store
from stack import prune
from stack import settings as stack_settings
from tests.helpers import eventually, rules_in_force
from tests.integration.test_pipeline import readings
from tests.target import Target

pytestmark = pytest.mark.local_stack


async def rows_per_table(db: asyncpg.Pool, sensor: str) -> dict[str, int]:
    return {
        table: await db.fetchval(f"SELECT count(*) FROM {table} WHERE sensor_id = $1", sensor)
        for table in store.SENSOR_TABLES
    }


async def redis_keys(client: aioredis.Redis, sensor: str) -> list[bytes]:
    return [
        key
        for key in (
            counters.counter_key(sensor),
            counters.last_reading_key(sensor),
            counters.alarms_key(sensor),
        )
        if await client.exists(key)
    ]


async def test_removing_a_fleet_takes_all_of_its_rows_and_keys_and_nothing_else(
    target: Target, receiver: ReceiverServiceStub, db: asyncpg.Pool, redis_client: aioredis.Redis, rules: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"sim-{run}-"
    fleet = [f"{prefix}0", f"{prefix}1"]
    # Next to the prefix on both sides in sort order: the prefix without its dash, and the bound.
    others = [f"sim-{run}", f"sim-{run}."]
    # An alarm per sensor too: the default rule's condition, raised once and still active.
    await rules(metricType="temperature", sensorIdPrefix=f"sim-{run}", threshold=95, count=3, clearCount=100)
    await rules_in_force(target)
    for sensor in fleet + others:
        # The original scenario: eight readings and two events per sensor, and the alarm's: every table.
        request = receiver_service_pb2.PushMetricsRequest(metrics=readings(sensor))
        assert (await receiver.PushMetrics(request, timeout=10)).accepted_count == 8

    async def everything_stored() -> None:
        for sensor in fleet + others:
            assert 0 not in (await rows_per_table(db, sensor)).values(), sensor

    await eventually(everything_stored, timeout=60, what="every table holding the sensors' rows")
    before = {sensor: await rows_per_table(db, sensor) for sensor in others}
    assert all([await redis_keys(redis_client, sensor) for sensor in fleet + others])

    removed = await prune.remove_sensors(stack_settings.load(), prefix)
    assert removed.rows["readings"] == 16
    assert removed.rows["events"] == 6
    assert removed.rows["alarms"] == 2
    assert removed.redis_keys == 6

    for sensor in fleet:
        assert set((await rows_per_table(db, sensor)).values()) == {0}
        assert await redis_keys(redis_client, sensor) == []
    for sensor in others:
        assert await rows_per_table(db, sensor) == before[sensor]
        assert len(await redis_keys(redis_client, sensor)) == 3


async def test_a_prefix_that_would_match_too_much_is_refused(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="prefix"):
        await store.delete_sensors(None, "")  # type: ignore[arg-type]  # refused before any query
    for prefix in ("", "sim-*", "sim-{x}"):
        with pytest.raises(ValueError, match="prefix"):
            await counters.delete_sensors(redis_client, prefix)
