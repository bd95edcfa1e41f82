"""Removes simulated sensors' data from the local stack: what a benchmark run or a load test wrote."""

from __future__ import annotations

from dataclasses import dataclass

from processor import admin as processor_admin
from saver import admin as saver_admin
from stack import access, credentials
from stack.settings import StackSettings


@dataclass(frozen=True)
class Removed:
    rows: dict[str, int]  # per table
    redis_keys: int


async def remove_sensors(settings: StackSettings, prefix: str, *, vacuum: bool = False) -> Removed:
    """Deletes every row and Redis key of the sensors whose ids start with `prefix`; with `vacuum`,
    makes the space reusable at once rather than when autovacuum gets to it."""
    conn = await access.postgres(settings, credentials.POSTGRES_WRITER)
    try:
        rows = await saver_admin.delete_sensors(conn, prefix)
    finally:
        await conn.close()
    if vacuum:  # only a table's owner may vacuum it
        conn = await access.postgres(settings, credentials.POSTGRES_OWNER)
        try:
            await saver_admin.vacuum(conn)
        finally:
            await conn.close()
    client = access.redis(settings)
    try:
        keys = await processor_admin.delete_sensors(client, prefix)
    finally:
        await client.aclose()
    return Removed(rows, keys)
