"""Aggregates over a time range that never scan more than two minutes of raw readings.

Whole minutes come from rollups_minute; the partial minutes at either end from the readings table.
So the cost of a query depends on the length of the range in minutes, not on the readings in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

MINUTE_US = 60_000_000

RANGE_AGGREGATE = """
WITH parts AS (
    SELECT count(*) AS count, sum(value) AS sum, sum(value * value) AS sum_squares,
           min(value) AS min, max(value) AS max
    FROM readings
    WHERE sensor_id = $1 AND metric_type = $2
      AND ((reading_time >= $3 AND reading_time < $4) OR (reading_time >= $5 AND reading_time < $6))
    UNION ALL
    SELECT sum(count), sum(sum), sum(sum_squares), min(min), max(max)
    FROM rollups_minute
    WHERE sensor_id = $1 AND metric_type = $2 AND minute >= $4 AND minute < $5
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


def split(start_us: int, end_us: int) -> tuple[int, int, int, int]:
    """[start, end) as raw head [start, a), whole minutes [a, b), raw tail [b, end)."""
    a = -(-start_us // MINUTE_US) * MINUTE_US
    b = end_us // MINUTE_US * MINUTE_US
    if a >= b:
        return start_us, end_us, end_us, end_us
    return start_us, a, b, end_us


async def range_aggregate(
    conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int
) -> Aggregate:
    row = await conn.fetchrow(RANGE_AGGREGATE, sensor_id, metric_type, *split(start_us, end_us))
    return Aggregate(row["count"], row["sum"] or 0.0, row["sum_squares"] or 0.0, row["min"], row["max"])
