"""A series' readings in a time range, wherever they are: raw rows (readings_raw, through the
function series_readings) and packed hours (readings_packed, unpacked here: runtime/packed.py).

One statement reads both, so one snapshot: compaction moves a reading from raw to packed in one
transaction, and a statement sees it in exactly one of the two. With a limit, only as many packed
rows are read as can hold that many readings (each row says how many it has).

`window` gives each reading with its unit and labels (what ListReadings and the ends of a range
show); `values` gives times and values only (what aggregates and percentiles read), the raw ones in
one bytea of (time, value) pairs rather than a row each: half the time at an hour of 1 Hz readings.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import numpy as np

from runtime import packed, postgres

# Oldest first. $5: at most this many (NULL: all); $6: an hour before $3 (a constant, unlike
# `$3 - interval '1 hour'`, so that the planner keeps only the range's partitions). Packed rows are
# taken in time order while the readings before them, less those of the first row (which may begin
# before the range), are fewer than the limit.
OLDEST_FIRST = """
(SELECT reading_time, value, unit, labels, NULL::bytea AS packed
 FROM series_readings($1, $2) WHERE reading_time >= $3 AND reading_time < $4
 ORDER BY reading_time LIMIT $5)
UNION ALL
(SELECT NULL, NULL, NULL, NULL, readings FROM (
    SELECT readings, sum(count) OVER w - count AS before, first_value(count) OVER w AS first
    FROM readings_packed
    WHERE series_id = (SELECT series_id FROM series WHERE sensor_id = $1 AND metric_type = $2)
      AND hour > $6 AND hour < $4 AND last_time >= $3 AND first_time < $4
    WINDOW w AS (ORDER BY hour)
 ) p WHERE $5::bigint IS NULL OR before < $5 + first)
"""
NEWEST_FIRST = OLDEST_FIRST.replace(
    "ORDER BY reading_time LIMIT", "ORDER BY reading_time DESC LIMIT"
).replace("WINDOW w AS (ORDER BY hour)", "WINDOW w AS (ORDER BY hour DESC)")
# Times and values of the range, in no order: raw ones as 16-byte big-endian pairs (microseconds
# since 2000, IEEE double), packed ones as their rows. $5: an hour before $3, as above.
VALUES = """
SELECT string_agg(timestamptz_send(reading_time) || float8send(value), '') AS readings, false AS packed
FROM series_readings($1, $2) WHERE reading_time >= $3 AND reading_time < $4
UNION ALL
SELECT readings, true FROM readings_packed
WHERE series_id = (SELECT series_id FROM series WHERE sensor_id = $1 AND metric_type = $2)
  AND hour > $5 AND hour < $4 AND last_time >= $3 AND first_time < $4
"""
RAW_PAIR = np.dtype([("time", ">i8"), ("value", ">f8")])
ATTRIBUTES = "SELECT attributes_id, unit, labels FROM reading_attributes WHERE attributes_id = ANY($1::int[])"


@dataclass(frozen=True)
class Values:
    """Readings in time order: times (µs) and values."""

    times: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def between(self, start_us: int, end_us: int) -> Values:
        """Those in [start_us, end_us)."""
        first, end = np.searchsorted(self.times, (start_us, end_us))
        return Values(self.times[first:end], self.values[first:end])


@dataclass(frozen=True)
class Window(Values):
    """Readings in time order (newest first if asked so), each with its unit and labels (JSON text)."""

    units: list[str | None]
    labels: list[str | None]


# Attributes never change once made (saver/series.py): remembered per pool (or connection).
_ATTRIBUTES: postgres.PerConnection[dict[int, tuple[str | None, str | None]]] = postgres.PerConnection(dict)


async def window(
    conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int,
    limit: int | None = None, *, newest_first: bool = False,
) -> Window:  # fmt: skip
    """The readings in [start_us, end_us), the first `limit` of them (all if None)."""
    if start_us >= end_us:
        return _empty()
    rows = await conn.fetch(
        NEWEST_FIRST if newest_first else OLDEST_FIRST,
        sensor_id,
        metric_type,
        start_us,
        end_us,
        limit,
        start_us - packed.HOUR_US,
    )
    raw = [r for r in rows if r["packed"] is None]
    unpacked = [packed.unpack(r["packed"]) for r in rows if r["packed"] is not None]
    if not unpacked:  # all raw: already in order and within the limit
        return Window(
            np.fromiter((r["reading_time"] for r in raw), np.int64, len(raw)),
            np.fromiter((r["value"] for r in raw), np.float64, len(raw)),
            [r["unit"] for r in raw], [r["labels"] for r in raw],
        )  # fmt: skip
    times = np.concatenate([np.fromiter((r["reading_time"] for r in raw), np.int64, len(raw))]
                           + [p.times for p in unpacked])  # fmt: skip
    values = np.concatenate([np.fromiter((r["value"] for r in raw), np.float64, len(raw))]
                            + [p.values for p in unpacked])  # fmt: skip
    # Raw readings point at themselves (-1 - index), packed ones at their attributes' id.
    keys = np.concatenate([-1 - np.arange(len(raw), dtype=np.int64)] + [p.attributes for p in unpacked])
    inside = (times >= start_us) & (times < end_us)
    times, values, keys = times[inside], values[inside], keys[inside]
    order = np.argsort(times, kind="stable")
    if newest_first:
        order = order[::-1]
    order = order[:limit]
    times, values, keys = times[order], values[order], keys[order]
    attributes = await _learn(conn, {int(k) for k in keys.tolist() if k >= 0})
    units, labels = [], []
    for key in keys.tolist():
        unit, label = (raw[-1 - key]["unit"], raw[-1 - key]["labels"]) if key < 0 else attributes[key]
        units.append(unit)
        labels.append(label)
    return Window(times, values, units, labels)


async def _learn(
    conn: asyncpg.Connection | asyncpg.Pool, ids: set[int]
) -> dict[int, tuple[str | None, str | None]]:
    known = _ATTRIBUTES.of(conn)
    missing = [i for i in ids if i not in known]
    if missing:
        for row in await conn.fetch(ATTRIBUTES, missing):
            known[row["attributes_id"]] = (row["unit"], row["labels"])
    return known


async def values(
    conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int
) -> Values:
    """The times and values of the readings in [start_us, end_us)."""
    if start_us >= end_us:
        return Values(*_empty_arrays())
    rows = await conn.fetch(VALUES, sensor_id, metric_type, start_us, end_us, start_us - packed.HOUR_US)
    times, values = [], []
    for row in rows:
        if row["readings"] is None:  # no raw readings
            continue
        if row["packed"]:
            found = packed.unpack(row["readings"])
            times.append(found.times)
            values.append(found.values)
        else:
            pairs = np.frombuffer(row["readings"], RAW_PAIR)
            times.append(pairs["time"].astype(np.int64) + postgres.PG_EPOCH_US)
            values.append(pairs["value"].astype(np.float64))
    if not times:
        return Values(*_empty_arrays())
    all_times, all_values = np.concatenate(times), np.concatenate(values)
    inside = (all_times >= start_us) & (all_times < end_us)
    all_times, all_values = all_times[inside], all_values[inside]
    order = np.argsort(all_times, kind="stable")
    return Values(all_times[order], all_values[order])


def _empty_arrays() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.float64)


def _empty() -> Window:
    return Window(*_empty_arrays(), [], [])
