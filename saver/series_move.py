"""Moves the readings stored before series existed (readings_rows, saver/migrations/0010) into
readings_raw: one of its partitions per transaction, each as a whole, so a move stopped at any point
(kill -9 included) goes on where it was at the next start, with nothing lost or stored twice. When
the last is moved, the old table goes and the view and function over readings read readings_raw
alone.

The saver runs it when it starts, after its migrations and before it stores anything (readings go
on arriving into Kafka meanwhile), under an advisory lock: other savers wait for it to finish.
Progress goes to the log, a line a partition.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta

import asyncpg

from saver import partitions

log = logging.getLogger(__name__)

LOCK_ID = 0x6D6F7665  # "move"
OLD = "readings_rows"

OLD_PARTITIONS = """
SELECT c.relname AS name, greatest(c.reltuples, 0)::bigint AS estimate
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings_rows'::regclass ORDER BY c.relname
"""
DAYS = "SELECT DISTINCT date_trunc('day', reading_time, 'UTC') AS day FROM {name}"
INTERN_SERIES = """
INSERT INTO series (sensor_id, metric_type) SELECT DISTINCT sensor_id, metric_type FROM {name}
ON CONFLICT DO NOTHING
"""
# No unit is NULL, no labels are NULL (as the saver stores them; older rows may have '' and {}).
INTERN_ATTRIBUTES = """
INSERT INTO reading_attributes (unit, labels)
SELECT DISTINCT nullif(unit, ''), nullif(nullif(labels, 'null'), '{{}}') FROM {name}
ON CONFLICT (unit, labels_digest(labels)) DO NOTHING
"""
# Joined on keys without NULLs, which a hash join can use.
MOVE = """
INSERT INTO readings_raw (series_id, attributes_id, reading_time, value)
SELECT s.series_id, a.attributes_id, o.reading_time, o.value
FROM {name} o
JOIN series s USING (sensor_id, metric_type)
JOIN reading_attributes a
  ON coalesce(a.unit, '') = coalesce(o.unit, '')
 AND coalesce(a.labels, '{{}}') = coalesce(nullif(o.labels, 'null'), '{{}}')
ON CONFLICT DO NOTHING
"""
# Once readings_rows is gone: readings_raw alone.
FINISH = """
CREATE OR REPLACE VIEW readings AS
    SELECT s.sensor_id, s.metric_type, r.reading_time, r.value, a.unit, a.labels
    FROM readings_raw r JOIN series s USING (series_id) LEFT JOIN reading_attributes a USING (attributes_id);
CREATE OR REPLACE FUNCTION series_readings(sensor text, metric text)
RETURNS TABLE (reading_time timestamptz, value double precision, unit text, labels jsonb)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT r.reading_time, r.value, a.unit, a.labels
    FROM readings_raw r LEFT JOIN reading_attributes a USING (attributes_id)
    WHERE r.series_id = (SELECT series_id FROM series WHERE sensor_id = sensor AND metric_type = metric)
$$;
DROP TABLE readings_rows;
DROP TABLE IF EXISTS readings_partitioning;
"""


async def finish(conn: asyncpg.Connection) -> int:
    """Moves what is left of readings_rows (see the module's docstring); returns the rows moved."""
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        if not await conn.fetchval(f"SELECT to_regclass('{OLD}') IS NOT NULL"):
            return 0
        return await _move(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


async def _move(conn: asyncpg.Connection) -> int:
    old = await conn.fetch(OLD_PARTITIONS)
    total = sum(r["estimate"] for r in old)
    log.info("moving readings to series: %d partitions, ~%s rows", len(old), f"{total:,}")
    began, moved = time.monotonic(), 0
    for number, part in enumerate(old, 1):
        started = time.monotonic()
        rows = await _move_partition(conn, part["name"])
        moved += rows
        seconds = time.monotonic() - started
        log.info(
            "moved %s (%d of %d): %s rows in %.1f s (%s rows/s); %s of ~%s so far",
            part["name"], number, len(old), f"{rows:,}", seconds, f"{rows / max(seconds, 1e-3):,.0f}",
            f"{moved:,}", f"{total:,}",
        )  # fmt: skip
    async with conn.transaction():
        await conn.execute(FINISH)
    log.info("moved %s readings in %.1f s; readings_rows is gone", f"{moved:,}", time.monotonic() - began)
    return moved


async def _move_partition(conn: asyncpg.Connection, name: str) -> int:
    async with conn.transaction():
        # Days ahead are left to the history's upkeep (a clock years ahead stays in the default one).
        last = datetime.now(UTC).date() + timedelta(days=1)
        days = {d for r in await conn.fetch(DAYS.format(name=name)) if (d := _day(r["day"])) <= last}
        made = await partitions.existing(conn)
        for day in sorted(days - made):
            await partitions.make(conn, day)
        await conn.execute(INTERN_SERIES.format(name=name))
        await conn.execute(INTERN_ATTRIBUTES.format(name=name))
        status = await conn.execute(MOVE.format(name=name))
        await conn.execute(f"DROP TABLE {name}")
    return int(status.rsplit(" ", 1)[1])


def _day(value: datetime) -> date:
    return value.astimezone(UTC).date()
