"""What tools outside the saver (the stack's prune command, the benchmark) may call: stable
functions over the saver's tables, so that the saver can change how it stores rows without
breaking them. Everything else in saver/ is the saver's own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from metrics.v1 import metric_pb2
from saver import store

# A reading as the saver stores it: sensor id, metric type, time (µs since 1970), value, unit,
# labels (JSON text).
ReadingRow = store.ReadingRow


def reading_rows(metrics: Iterable[metric_pb2.Metric]) -> list[ReadingRow]:
    """The rows of readings, as the saver makes them from a batch."""
    rows: list[ReadingRow] = []
    store.reading_rows(metric_pb2.MetricBatch(metrics=metrics), rows)
    return rows


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
    await conn.execute(f"VACUUM {'(ANALYZE) ' if analyze else ''}{', '.join(store.SENSOR_TABLES)}")
