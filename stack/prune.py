"""Removes simulated sensors' data from the local stack: what a benchmark run or a load test wrote."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from processor import counters
from saver import store
from stack.settings import StackSettings


@dataclass(frozen=True)
class Removed:
    rows: dict[str, int]  # per table
    redis_keys: int


async def remove_sensors(settings: StackSettings, prefix: str, *, vacuum: bool = False) -> Removed:
    """Deletes every row and Redis key of the sensors whose ids start with `prefix`; with `vacuum`,
    makes the space reusable at once rather than when autovacuum gets to it."""
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        rows = await store.delete_sensors(conn, prefix)
        if vacuum:
            await conn.execute(f"VACUUM {', '.join(store.SENSOR_TABLES)}")
    finally:
        await conn.close()
    client = aioredis.from_url(settings.redis_url)
    try:
        keys = await counters.delete_sensors(client, prefix)
    finally:
        await client.aclose()
    return Removed(rows, keys)
