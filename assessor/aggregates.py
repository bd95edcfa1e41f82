"""Exact aggregates over a time range that read rollups for whole hours and minutes and raw
readings only for the partial minutes at the ends, so their cost depends on the length of the range
(at most ~2 hours of minute rows and 2 minutes of readings, plus one row per hour), never on the
sensor's total history."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import numpy as np

from assessor import readings

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US

# Rollups of the whole minutes and hours; the readings of the partial minutes at the ends are
# added by range_aggregate (assessor/readings.py: they may be raw or packed). Sums of doubles are
# taken in time order: the same range gives the same answer, whatever plan PostgreSQL chooses.
ROLLUPS = """
WITH parts AS (
    SELECT 1 AS part, sum(count) AS count, sum(sum ORDER BY minute) AS sum,
           sum(sum_squares ORDER BY minute) AS sum_squares, min(min) AS min, max(max) AS max
    FROM rollups_minute
    WHERE sensor_id = $1 AND metric_type = $2
      AND ((minute >= $3 AND minute < $4) OR (minute >= $5 AND minute < $6))
    UNION ALL
    SELECT 2, sum(count), sum(sum ORDER BY hour), sum(sum_squares ORDER BY hour), min(min), max(max)
    FROM rollups_hour
    WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $4 AND hour < $5
)
SELECT coalesce(sum(count), 0)::bigint AS count, sum(sum ORDER BY part) AS sum,
       sum(sum_squares ORDER BY part) AS sum_squares, min(min) AS min, max(max) AS max
FROM parts
"""


@dataclass(frozen=True)
class Aggregate:
    count: int
    sum: float
    sum_squares: float
    min: float | None
    max: float | None

    def plus(self, other: Aggregate) -> Aggregate:
        def pick(f: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else f(a, b)

        return Aggregate(
            self.count + other.count, self.sum + other.sum, self.sum_squares + other.sum_squares,
            pick(min, self.min, other.min), pick(max, self.max, other.max),
        )  # fmt: skip

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
    pool: asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int
) -> Aggregate:
    parts = split(start_us, end_us)
    total, head, tail = await asyncio.gather(
        rollups(pool, sensor_id, metric_type, parts),
        readings.values(pool, sensor_id, metric_type, parts.start, parts.m1),
        readings.values(pool, sensor_id, metric_type, parts.m2, parts.end),
    )
    return with_ends(total, parts, head, tail)


async def rollups(pool: asyncpg.Pool, sensor_id: str, metric_type: str, parts: Split) -> Aggregate:
    """The aggregate of the whole minutes and hours of a range: [m1, m2)."""
    row = await pool.fetchrow(ROLLUPS, sensor_id, metric_type, parts.m1, parts.h1, parts.h2, parts.m2)
    return Aggregate(row["count"], row["sum"] or 0.0, row["sum_squares"] or 0.0, row["min"], row["max"])


def with_ends(whole: Aggregate, parts: Split, head: readings.Values, tail: readings.Values) -> Aggregate:
    """`whole` (of [m1, m2)) with the readings of [start, m1) and [m2, end), taken from head and tail
    (which may hold more)."""
    ends = (head.between(parts.start, parts.m1), tail.between(parts.m2, parts.end))
    return whole.plus(of_values(np.concatenate([end.values for end in ends])))


def of_values(values: np.ndarray) -> Aggregate:
    if not len(values):
        return Aggregate(0, 0.0, 0.0, None, None)
    return Aggregate(
        len(values),
        float(values.sum()),
        float((values * values).sum()),
        float(values.min()),
        float(values.max()),
    )
