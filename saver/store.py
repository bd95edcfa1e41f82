"""Writes rows to PostgreSQL in one transaction per round, idempotently, with the rollups.

Readings are stored keyed by series (saver/series.py: the ids are made before the transaction):
COPY into a per-connection staging table, then a plain INSERT into `readings_raw` under a
savepoint. Almost always every row is new and that is the whole write. If a row was stored before
(Kafka redelivered it, or a client resent it), the savepoint is rolled back and the rows go through
INSERT … ON CONFLICT DO NOTHING instead, keeping only the new ones. Either way the rollups, the
histograms and the latest readings are then updated from exactly the rows that were new; they are
keyed by names, which the round's series bring along (staging_series).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg
from google.protobuf import timestamp_pb2

from metrics.v1 import event_pb2
from runtime import postgres, validation
from saver import closed_hours, series

ReadingRow = validation.Checked  # sensor id, metric type, time, value, unit, labels (JSON)
KeyedRow = closed_hours.Row  # series id, attributes id, time, value: a row of readings_raw
SeriesRow = tuple[int, str, str]  # series id, sensor id, metric type
EventRow = tuple[str, int, str, str, float, int, float, int, int, str, int, str, bytes | None]


class AlarmRow(NamedTuple):
    """A row of `alarms`, in its columns' order; times in µs."""

    alarm_id: str
    sensor_id: str
    rule_id: str
    metric_type: str
    severity: int
    threshold: float
    raise_time: int
    raise_value: float
    match_count: int
    last_match_time: int
    last_match_value: float
    clear_time: int | None
    cleared_by: str | None
    acknowledge_time: int | None
    acknowledged_by: str | None

    def merged(self, other: AlarmRow) -> AlarmRow:
        """What UPSERT_ALARMS makes of the two."""
        last = other if other.last_match_time > self.last_match_time else self
        return self._replace(
            match_count=max(self.match_count, other.match_count),
            last_match_time=last.last_match_time,
            last_match_value=last.last_match_value,
            clear_time=_first(self.clear_time, other.clear_time),
            cleared_by=_first(self.cleared_by, other.cleared_by),
            acknowledge_time=_first(self.acknowledge_time, other.acknowledge_time),
            acknowledged_by=_first(self.acknowledged_by, other.acknowledged_by),
        )


def _first(a: Any, b: Any) -> Any:
    return a if a is not None else b


STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    series_id integer, attributes_id integer, reading_time timestamptz, value double precision
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_series (
    series_id integer PRIMARY KEY, sensor_id text, metric_type text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS new_readings (LIKE staging_readings) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_events (
    event_id uuid, kind smallint, sensor_id text, metric_type text, value double precision,
    reading_time timestamptz, threshold double precision, count integer, detect_time timestamptz,
    rule_id text, severity smallint, alarm_id text, alarm bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_alarms (LIKE alarms) ON COMMIT DELETE ROWS;
"""

COLUMNS = "series_id, attributes_id, reading_time, value"
INSERT_ALL = f"INSERT INTO readings_raw ({COLUMNS}) SELECT {COLUMNS} FROM staging_readings"  # noqa: S608
INSERT_NEW = f"""
WITH new AS (
    INSERT INTO readings_raw ({COLUMNS}) SELECT {COLUMNS} FROM staging_readings
    ON CONFLICT DO NOTHING RETURNING {COLUMNS}
)
INSERT INTO new_readings SELECT * FROM new
"""  # noqa: S608 - constants of this module


# A square too small for a double is 0: PostgreSQL would refuse it as an underflow (1e-200 is a
# valid reading).
SQUARE = "CASE WHEN abs(value) < 1e-154 THEN 0 ELSE value * value END"


def fold(source: str) -> str:
    """The statement that folds the rows of `source` (all new) into rollups, histograms and latest.
    Rows are grouped by series id first; names join the groups (few), not the rows."""
    return f"""
WITH minutes AS (
    SELECT s.sensor_id, s.metric_type, m.minute, m.count, m.sum, m.sum_squares, m.min, m.max
    FROM (
        SELECT series_id, date_trunc('minute', reading_time, 'UTC') AS minute,
               count(*) AS count, sum(value) AS sum, sum({SQUARE}) AS sum_squares,
               min(value) AS min, max(value) AS max
        FROM {source} GROUP BY 1, 2
    ) m JOIN staging_series s USING (series_id)
), rollup_minute AS (
    INSERT INTO rollups_minute AS r SELECT * FROM minutes
    ON CONFLICT (sensor_id, metric_type, minute) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        sum_squares = r.sum_squares + excluded.sum_squares,
        min = least(r.min, excluded.min),
        max = greatest(r.max, excluded.max)
), rollup_hour AS (
    INSERT INTO rollups_hour AS r
    SELECT sensor_id, metric_type, date_trunc('hour', minute, 'UTC'),
           sum(count), sum(sum), sum(sum_squares), min(min), max(max)
    FROM minutes GROUP BY 1, 2, 3
    ON CONFLICT (sensor_id, metric_type, hour) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        sum_squares = r.sum_squares + excluded.sum_squares,
        min = least(r.min, excluded.min),
        max = greatest(r.max, excluded.max)
), histogram AS (
    INSERT INTO histogram_hour AS h
    SELECT s.sensor_id, s.metric_type, b.hour, b.bin, b.count
    FROM (
        SELECT series_id, date_trunc('hour', reading_time, 'UTC') AS hour, value_bin(value) AS bin,
               count(*) AS count
        FROM {source} GROUP BY 1, 2, 3
    ) b JOIN staging_series s USING (series_id)
    ON CONFLICT (sensor_id, metric_type, hour, bin) DO UPDATE SET count = h.count + excluded.count
), newest AS (
    SELECT series_id, max(reading_time) AS reading_time FROM {source} GROUP BY 1
)
INSERT INTO latest_readings AS l (sensor_id, metric_type, reading_time, value, unit)
SELECT s.sensor_id, s.metric_type, r.reading_time, r.value, a.unit
FROM {source} r JOIN newest USING (series_id, reading_time) JOIN staging_series s USING (series_id)
    JOIN reading_attributes a USING (attributes_id)
ON CONFLICT (sensor_id, metric_type) DO UPDATE SET
    reading_time = excluded.reading_time, value = excluded.value, unit = excluded.unit
WHERE excluded.reading_time > l.reading_time
"""  # noqa: S608 - the source is one of two table names of this module


FOLD_ALL = fold("staging_readings")
FOLD_NEW = fold("new_readings")

INSERT_EVENTS = "INSERT INTO events SELECT * FROM staging_events ON CONFLICT DO NOTHING"

# The events of an alarm's changes may come in any order (a change by hand is produced by another
# process than the rule's): each merges what it knows; the first clear and acknowledgement stay.
UPSERT_ALARMS = """
INSERT INTO alarms AS a SELECT * FROM staging_alarms
ON CONFLICT (alarm_id) DO UPDATE SET
    match_count = greatest(a.match_count, excluded.match_count),
    last_match_time = greatest(a.last_match_time, excluded.last_match_time),
    last_match_value = CASE WHEN excluded.last_match_time > a.last_match_time
                            THEN excluded.last_match_value ELSE a.last_match_value END,
    clear_time = coalesce(a.clear_time, excluded.clear_time),
    cleared_by = coalesce(a.cleared_by, excluded.cleared_by),
    acknowledge_time = coalesce(a.acknowledge_time, excluded.acknowledge_time),
    acknowledged_by = coalesce(a.acknowledged_by, excluded.acknowledged_by)
"""


async def setup_connection(conn: asyncpg.Connection) -> None:
    """Times as microseconds (runtime.postgres), and this connection's staging tables."""
    await postgres.setup_connection(conn)
    await conn.execute(STAGING)


def micros(t: timestamp_pb2.Timestamp) -> int:
    """A timestamp as microseconds since 1970, as the tables keep times (runtime.postgres)."""
    return t.seconds * 1_000_000 + t.nanos // 1000


def event_row(event: event_pb2.Event) -> EventRow:
    return (
        event.event_id, event.kind, event.sensor_id, event.metric_type, event.value,
        micros(event.reading_time), event.threshold, event.count, micros(event.detect_time),
        event.rule_id, event.severity, event.alarm_id,
        event.alarm.SerializeToString() if event.HasField("alarm") else None,
    )  # fmt: skip


def alarm_row(alarm: event_pb2.Alarm) -> AlarmRow:
    return AlarmRow(
        alarm.alarm_id, alarm.sensor_id, alarm.rule_id, alarm.metric_type, alarm.severity, alarm.threshold,
        micros(alarm.raise_time), alarm.raise_value, alarm.match_count, micros(alarm.last_match_time),
        alarm.last_match_value,
        micros(alarm.clear_time) if alarm.HasField("clear_time") else None, alarm.cleared_by or None,
        micros(alarm.acknowledge_time) if alarm.acknowledged else None, alarm.acknowledged_by or None,
    )  # fmt: skip


def alarm_rows(events: Sequence[EventRow]) -> list[AlarmRow]:
    """The alarms the events change, one row each (an UPSERT changes a row once), merged as
    UPSERT_ALARMS merges them."""
    merged: dict[str, AlarmRow] = {}
    for *_, alarm in events:
        if alarm is not None:
            row = alarm_row(event_pb2.Alarm.FromString(alarm))
            old = merged.get(row.alarm_id)
            merged[row.alarm_id] = row if old is None else old.merged(row)
    return list(merged.values())


# Every table that holds rows of a sensor by name (readings_raw holds them by series).
SENSOR_TABLES = (
    "events", "alarms", "rollups_minute", "rollups_hour", "histogram_hour", "latest_readings",
)  # fmt: skip


async def delete_sensors(conn: asyncpg.Connection, prefix: str) -> dict[str, int]:
    """Removes, in one transaction, everything stored of the sensors whose ids start with `prefix`
    (a simulated fleet's); returns the rows deleted per table."""
    if not prefix:
        raise ValueError("prefix: empty; it would delete every sensor")
    # The range finds the rows through the index; starts_with makes sure that, in another collation,
    # no other sensor's are deleted.
    upper = postgres.prefix_upper_bound(prefix)
    where = "sensor_id >= $1 AND sensor_id < $2 AND starts_with(sensor_id, $1)"
    deleted = {}
    async with conn.transaction():
        # The series stay (savers remember their ids): a sensor that comes back has its id again.
        of_series = f"series_id IN (SELECT series_id FROM series WHERE {where})"  # noqa: S608
        status = await conn.execute(f"DELETE FROM readings_raw WHERE {of_series}", prefix, upper)  # noqa: S608
        deleted["readings"] = _rows(status)
        deleted["readings"] += await conn.fetchval(
            f"WITH p AS (DELETE FROM readings_packed WHERE {of_series} RETURNING count) "  # noqa: S608
            "SELECT coalesce(sum(count), 0) FROM p",
            prefix, upper,
        )  # fmt: skip
        await conn.execute(f"DELETE FROM compaction_queue WHERE {of_series}", prefix, upper)  # noqa: S608
        if await conn.fetchval("SELECT to_regclass('readings_rows') IS NOT NULL"):  # not yet moved
            deleted["readings"] += _rows(
                await conn.execute(f"DELETE FROM readings_rows WHERE {where}", prefix, upper)  # noqa: S608
            )
        for table in SENSOR_TABLES:
            status = await conn.execute(f"DELETE FROM {table} WHERE {where}", prefix, upper)  # noqa: S608
            deleted[table] = _rows(status)
    return deleted


async def write(
    conn: asyncpg.Connection, readings: Sequence[ReadingRow], events: Sequence[EventRow]
) -> tuple[int, int]:
    """Stores the rows in one transaction; returns how many readings and events were new."""
    new_readings = new_events = 0
    staged, named = await keyed(conn, readings)
    async with conn.transaction():
        if readings and (kept := await closed_hours.unpacked(conn, staged)):
            new_readings = await _write_readings(conn, kept, named)
        if events:
            await conn.copy_records_to_table("staging_events", records=events)
            new_events = _rows(await conn.execute(INSERT_EVENTS))
            if alarms := alarm_rows(events):
                await conn.copy_records_to_table("staging_alarms", records=alarms)
                await conn.execute(UPSERT_ALARMS)
    return new_readings, new_events


async def keyed(
    conn: asyncpg.Connection, readings: Sequence[ReadingRow]
) -> tuple[list[KeyedRow], list[SeriesRow]]:
    """The rows as readings_raw keeps them, and the names of their series."""
    if not readings:
        return [], []
    keys = {(r[0], r[1]) for r in readings}
    known = series.IDS.of(conn)
    await known.learn(conn, keys, {(r[4], r[5]) for r in readings})
    ids, attributes = known.series, known.attributes
    staged = [(ids[s, m], attributes[u, labels], t, v) for s, m, t, v, u, labels in readings]
    return staged, [(ids[key], *key) for key in keys]


async def _write_readings(
    conn: asyncpg.Connection, readings: Sequence[KeyedRow], named: Sequence[SeriesRow]
) -> int:
    await conn.copy_records_to_table("staging_series", records=named)
    await conn.copy_records_to_table("staging_readings", records=readings)
    try:
        async with conn.transaction():  # a savepoint
            await conn.execute(INSERT_ALL)
    except asyncpg.UniqueViolationError:
        new_readings = _rows(await conn.execute(INSERT_NEW))
        await conn.execute(FOLD_NEW)
        return new_readings
    await conn.execute(FOLD_ALL)
    return len(readings)


def _rows(status: str) -> int:
    """The rows a command changed, from its status ('INSERT 0 42')."""
    return int(status.rsplit(" ", 1)[1])
