"""What tools outside the saver (the stack's prune command, the benchmark) may call: stable
functions over the saver's tables, so that the saver can change how it stores rows without
breaking them. Everything else in saver/ is the saver's own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta

import asyncpg

from metrics.v1 import metric_pb2
from runtime import postgres
from saver import partitions, store

# A reading as the saver stores it: sensor id, metric type, time (µs since 1970), value, unit,
# labels (JSON text).
ReadingRow = store.ReadingRow


def reading_rows(metrics: Iterable[metric_pb2.Metric]) -> list[ReadingRow]:
    """The rows of readings, as the saver makes them from a batch."""
    rows: list[ReadingRow] = []
    store.reading_rows(metric_pb2.MetricBatch(metrics=metrics), rows)
    return rows


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
SELECT count(*) FROM readings_raw
WHERE series_id = ANY(ARRAY(SELECT series_id FROM series WHERE sensor_id >= $1 AND sensor_id < $2))
"""


async def stored_count(conn: asyncpg.Connection, prefix: str) -> int:
    """How many readings are stored of the sensors whose ids start with `prefix`. `conn`: the
    saver's writer role or the assessor's reader."""
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
    `first_day` to `last_day`, as their day partitions hold them. `conn`: the owner of the tables."""
    names = [
        partitions.partition_name(first_day + timedelta(days=n))
        for n in range((last_day - first_day).days + 1)
    ]
    found = await conn.fetch(
        "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class WHERE relname = ANY($1)", names
    )
    readings = 0
    for row in found:
        readings += await conn.fetchval(f"SELECT count(*) FROM {row['relname']}")  # noqa: S608 - our names
    return readings, sum(row["bytes"] for row in found)
