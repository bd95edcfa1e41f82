"""What tools outside the saver (the stack's prune command, the benchmark) may call: stable
functions over the saver's tables, so that the saver can change how it stores rows without
breaking them. Everything else in saver/ is the saver's own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date, timedelta

import asyncpg

from metrics.v1 import metric_pb2
from runtime import postgres, records, validation
from saver import compaction, history, partitions, store

# A reading as the saver stores it: sensor id, metric type, time (µs since 1970), value, unit,
# labels (JSON text).
ReadingRow = validation.Checked


def reading_rows(metrics: Sequence[metric_pb2.Metric]) -> list[ReadingRow]:
    """The rows of readings, as the saver makes them from a batch (checked as it checks them)."""
    return records.checked(metrics)


async def keyed_rows(
    conn: asyncpg.Connection, rows: Sequence[ReadingRow]
) -> list[tuple[int, int, int, float]]:
    """The rows as a row of readings_raw holds them: series id, attributes id, time, value (the ids
    made if new). `conn`: the saver's writer role, not in a transaction."""
    keyed, _ = await store.keyed(conn, rows)
    return keyed


# The series first, then the key's index per series (a join by a range of names can make the planner
# read every reading).
STORED_COUNT = """
WITH s AS (SELECT ARRAY(SELECT series_id FROM series WHERE sensor_id >= $1 AND sensor_id < $2) AS ids)
SELECT (SELECT count(*) FROM readings_raw WHERE series_id = ANY((SELECT ids FROM s)::int[]))
     + (SELECT coalesce(sum(count), 0) FROM readings_packed WHERE series_id = ANY((SELECT ids FROM s)::int[]))
"""


async def stored_count(conn: asyncpg.Connection, prefix: str) -> int:
    """How many readings are stored, raw or packed, of the sensors whose ids start with `prefix`.
    `conn`: the saver's writer role or the assessor's reader."""
    count: int = await conn.fetchval(STORED_COUNT, prefix, postgres.prefix_upper_bound(prefix))
    return count


async def write_readings(conn: asyncpg.Connection, rows: Sequence[ReadingRow]) -> int:
    """Stores readings through the saver's own write path (idempotent, rollups and all), in one
    transaction; returns how many were new. `conn`: the saver's writer role."""
    await store.setup_connection(conn)
    new, _ = await store.write(conn, rows, [])
    return new


async def delete_sensors(conn: asyncpg.Connection, prefix: str) -> dict[str, int]:
    """Removes everything stored of the sensors whose ids start with `prefix`, in one transaction;
    returns the rows deleted per table. `conn`: the saver's writer role."""
    return await store.delete_sensors(conn, prefix)


async def vacuum(conn: asyncpg.Connection, *, analyze: bool = False) -> None:
    """Makes the space of deleted rows reusable at once (and with `analyze`, refreshes the
    planner's statistics). `conn`: the owner of the tables (only an owner may vacuum)."""
    tables = ("readings_raw", *store.SENSOR_TABLES)
    await conn.execute(f"VACUUM {'(ANALYZE) ' if analyze else ''}{', '.join(tables)}")


async def stored_bytes(conn: asyncpg.Connection, first_day: date, last_day: date) -> tuple[int, int]:
    """(readings, bytes on disk: heap, indexes, TOAST) of the readings of the UTC days from
    `first_day` to `last_day`, raw and packed, as their day partitions hold them. `conn`: the owner
    of the tables."""
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    raw = [f"readings_raw_p{d:%Y%m%d}" for d in days]
    packed = [f"readings_packed_p{d:%Y%m%d}" for d in days]
    found = await conn.fetch(
        "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class WHERE relname = ANY($1)",
        raw + packed,
    )
    readings = 0
    for row in found:
        count = "count(*)" if row["relname"] in raw else "coalesce(sum(count), 0)"
        readings += await conn.fetchval(f"SELECT {count} FROM {row['relname']}")  # noqa: S608 - our names
    return readings, sum(row["bytes"] for row in found)


async def compact(
    conn: asyncpg.Connection, grace_s: float = 0.0, prefix: str | None = None
) -> compaction.Pass:
    """A compaction pass now (saver/compaction.py), of every series or of the sensors whose ids
    start with `prefix`. `conn`: the saver's writer role."""
    await compaction.setup_connection(conn)
    only = None
    if prefix is not None:
        rows = await conn.fetch(
            "SELECT series_id FROM series"
            " WHERE sensor_id >= $1 AND sensor_id < $2 AND starts_with(sensor_id, $1)",
            prefix, postgres.prefix_upper_bound(prefix),
        )  # fmt: skip
        only = [r["series_id"] for r in rows]
    return await compaction.compact(conn, grace_s, time.time_ns() // 1000, only)


# Estimates from the planner's statistics (counting every raw row would take long on a big stack):
# the rows of each table, and the readings a packed row holds on average, from a sample.
STORAGE = """
SELECT c.relname AS parent, coalesce(sum(greatest(p.reltuples, 0)), 0)::bigint AS rows,
       coalesce(sum(pg_total_relation_size(p.oid)), 0)::bigint AS bytes
FROM pg_class c JOIN pg_inherits i ON i.inhparent = c.oid JOIN pg_class p ON p.oid = i.inhrelid
WHERE c.relname IN ('readings_raw', 'readings_packed')
GROUP BY 1
"""
PACKED_PER_ROW = "SELECT avg(count) FROM readings_packed TABLESAMPLE SYSTEM (1) REPEATABLE (0)"
PACKED_PER_ROW_ALL = "SELECT avg(count) FROM readings_packed"


async def storage(conn: asyncpg.Connection) -> tuple[int, int, int, int]:
    """(raw readings, their bytes, packed readings, their bytes), the counts estimated. `conn`: the
    owner of the tables."""
    found = {r["parent"]: (r["rows"], r["bytes"]) for r in await conn.fetch(STORAGE)}
    raw, raw_bytes = found.get("readings_raw", (0, 0))
    rows, packed_bytes = found.get("readings_packed", (0, 0))
    per_row = await conn.fetchval(PACKED_PER_ROW if rows > 100_000 else PACKED_PER_ROW_ALL)
    return raw, raw_bytes, round(rows * float(per_row or 0)), packed_bytes


async def reclaim(conn: asyncpg.Connection) -> list[str]:
    """Empties the raw partitions of wholly packed days that hold no raw reading (what the saver's
    history pass does every hour); returns their names. `conn`: the owner of the tables."""
    return await partitions.reclaim(conn, await history.compacted_day(conn))
