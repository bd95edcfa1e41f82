"""Exact aggregates over a time range that read rollups for whole hours and minutes and raw
readings only for the partial minutes at the ends, so their cost depends on the length of the range
(at most ~2 hours of minute rows and 2 minutes of readings, plus one row per hour), never on the
sensor's total history."""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US

RANGE_AGGREGATE = """
WITH parts AS (
    SELECT count(*) AS count, sum(value) AS sum, sum(value * value) AS sum_squares,
           min(value) AS min, max(value) AS max
    FROM series_readings($1, $2)
    WHERE (reading_time >= $3 AND reading_time < $4) OR (reading_time >= $7 AND reading_time < $8)
    UNION ALL
    SELECT sum(count), sum(sum), sum(sum_squares), min(min), max(max)
    FROM rollups_minute
    WHERE sensor_id = $1 AND metric_type = $2
      AND ((minute >= $4 AND minute < $5) OR (minute >= $6 AND minute < $7))
    UNION ALL
    SELECT sum(count), sum(sum), sum(sum_squares), min(min), max(max)
    FROM rollups_hour
    WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $5 AND hour < $6
)
SELECT coalesce(sum(count), 0)::bigint AS count, sum(sum) AS sum, sum(sum_squares) AS sum_squares,
       min(min) AS min, max(max) AS max
FROM parts
"""


@dataclass(frozen=True)
class Aggregate:
    count: int
    sum: float
    sum_squares: float
    min: float | None
    max: float | None

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def stddev(self) -> float | None:
        """Population standard deviation."""
        if not self.count:
            return None
        mean = self.sum / self.count
        return math.sqrt(max(self.sum_squares / self.count - mean * mean, 0.0))


@dataclass(frozen=True)
class Split:
    """[start, end) as raw [start, m1), minutes [m1, h1), hours [h1, h2), minutes [h2, m2), raw [m2, end)."""

    start: int
    m1: int
    h1: int
    h2: int
    m2: int
    end: int

    def bounds(self) -> tuple[int, int, int, int, int, int]:
        return self.start, self.m1, self.h1, self.h2, self.m2, self.end


def _ceil(t: int, unit: int) -> int:
    return -(-t // unit) * unit


def split(start_us: int, end_us: int) -> Split:
    m1, m2 = _ceil(start_us, MINUTE_US), end_us // MINUTE_US * MINUTE_US
    if m1 >= m2:
        return Split(start_us, end_us, end_us, end_us, end_us, end_us)
    h1, h2 = _ceil(m1, HOUR_US), m2 // HOUR_US * HOUR_US
    if h1 >= h2:
        return Split(start_us, m1, m2, m2, m2, end_us)
    return Split(start_us, m1, h1, h2, m2, end_us)


async def range_aggregate(
    conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int
) -> Aggregate:
    row = await conn.fetchrow(RANGE_AGGREGATE, sensor_id, metric_type, *split(start_us, end_us).bounds())
    return Aggregate(row["count"], row["sum"] or 0.0, row["sum_squares"] or 0.0, row["min"], row["max"])
