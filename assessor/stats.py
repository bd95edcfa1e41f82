"""GetSensorStats: exact aggregates, percentiles and time buckets of one sensor's metric over a range.

- count, min, max, mean, stddev: exact, from rollups and the raw readings at the ends (aggregates.py).
- p50, p95, p99: nearest rank (the smallest value with at least p% of the readings at or below it).
  Exact, from the readings, when the range holds at most EXACT_PERCENTILES_MAX readings; otherwise
  from hourly value histograms (logarithmic bins, saver/migrations/0002) and the readings of the
  partial hours at the ends, within 1% of the exact value.
- buckets: exact per bucket; buckets are aligned to multiples of their width since 1970-01-01 UTC.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import asyncpg

from assessor import horizons
from assessor.aggregates import HOUR_US, Aggregate, range_aggregate, split

EXACT_PERCENTILES_MAX = 20_000
PERCENTILES = (0.50, 0.95, 0.99)
# Histogram bins (see value_bin in saver/migrations/0002): 1% relative accuracy.
GAMMA = 1.01 / 0.99
BIN_OFFSET = 10_000

EDGES = """
(SELECT value, reading_time, unit, labels FROM series_readings($1, $2)
 WHERE reading_time >= $3 AND reading_time < $4
 ORDER BY reading_time LIMIT 1)
UNION ALL
(SELECT value, reading_time, unit, labels FROM series_readings($1, $2)
 WHERE reading_time >= $3 AND reading_time < $4
 ORDER BY reading_time DESC LIMIT 1)
"""

EXACT_PERCENTILES = """
SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]::double precision[]) WITHIN GROUP (ORDER BY value) AS p
FROM series_readings($1, $2) WHERE reading_time >= $3 AND reading_time < $4
"""

# Readings of the partial hours at both ends, binned, plus the histograms of the whole hours between.
HISTOGRAM = """
SELECT bin, sum(count)::bigint AS count FROM (
    SELECT value_bin(value) AS bin, count(*) AS count FROM series_readings($1, $2)
    WHERE ((reading_time >= $3 AND reading_time < $4) OR (reading_time >= $5 AND reading_time < $6))
    GROUP BY 1
    UNION ALL
    SELECT bin, sum(count) FROM histogram_hour
    WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $4 AND hour < $5
    GROUP BY 1
) parts GROUP BY bin ORDER BY bin
"""

BUCKETS = """
WITH parts AS (
    SELECT (extract(epoch FROM reading_time) * 1000000)::bigint / $9 AS bucket,
           count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max
    FROM series_readings($1, $2)
    WHERE (reading_time >= $3 AND reading_time < $4) OR (reading_time >= $7 AND reading_time < $8)
    GROUP BY 1
    UNION ALL
    SELECT (extract(epoch FROM minute) * 1000000)::bigint / $9, sum(count), sum(sum), min(min), max(max)
    FROM rollups_minute
    WHERE sensor_id = $1 AND metric_type = $2
      AND ((minute >= $4 AND minute < $5) OR (minute >= $6 AND minute < $7))
    GROUP BY 1
    UNION ALL
    SELECT (extract(epoch FROM hour) * 1000000)::bigint / $9, sum(count), sum(sum), min(min), max(max)
    FROM rollups_hour
    WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $5 AND hour < $6
    GROUP BY 1
)
SELECT bucket, sum(count)::bigint AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max
FROM parts GROUP BY bucket ORDER BY bucket
"""


@dataclass(frozen=True)
class Reading:
    value: float
    time_us: int
    unit: str | None
    labels: str | None  # JSON, as stored


@dataclass(frozen=True)
class Bucket:
    start_us: int
    count: int
    min: float | None
    max: float | None
    mean: float | None


@dataclass(frozen=True)
class Stats:
    aggregate: Aggregate
    first: Reading | None
    last: Reading | None
    percentiles: tuple[float, ...] | None
    buckets: list[Bucket]
    # Raw readings before this (µs) have expired (horizons.raw_from); None: all of the range's are kept.
    raw_from_us: int | None = None


async def sensor_stats(
    pool: asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int, width_us: int | None
) -> Stats:
    key = (sensor_id, metric_type)
    # One round of queries in parallel. The histogram is only read for ranges with whole hours; a
    # range small enough for exact percentiles takes a second, cheap query instead.
    h1, h2 = -(-start_us // HOUR_US) * HOUR_US, end_us // HOUR_US * HOUR_US
    aggregate, edges, buckets, histogram, raw_from_us = await asyncio.gather(
        range_aggregate(pool, *key, start_us, end_us),
        pool.fetch(EDGES, *key, start_us, end_us),
        _buckets(pool, *key, start_us, end_us, width_us) if width_us else _nothing(),
        pool.fetch(HISTOGRAM, *key, start_us, h1, h2, end_us) if h1 < h2 else _nothing(),
        horizons.raw_from(pool, [metric_type], start_us),
    )
    first = last = None
    if edges:
        first, last = (
            Reading(r["value"], r["reading_time"], r["unit"], r["labels"]) for r in (edges[0], edges[-1])
        )
    percentiles = None
    # Exact percentiles need every raw reading of the range; the histograms outlive them.
    exact = raw_from_us is None and aggregate.count <= EXACT_PERCENTILES_MAX
    if aggregate.count and (exact or not histogram):
        percentiles = tuple(await pool.fetchval(EXACT_PERCENTILES, *key, start_us, end_us))
    elif aggregate.count:
        assert aggregate.min is not None and aggregate.max is not None
        bins = [(r["bin"], r["count"]) for r in histogram]
        percentiles = histogram_percentiles(bins, aggregate.min, aggregate.max)
    return Stats(aggregate, first, last, percentiles, buckets, raw_from_us)


async def _nothing() -> list[Any]:
    return []


def histogram_percentiles(bins: list[tuple[int, int]], low: float, high: float) -> tuple[float, ...]:
    """Nearest-rank percentiles from (bin, count) pairs sorted by bin, clamped to the exact [low, high]."""
    total = sum(count for _, count in bins)
    out = []
    for p in PERCENTILES:
        rank = max(1, math.ceil(p * total))
        seen = 0
        for bin_, count in bins:
            seen += count
            if seen >= rank:
                out.append(min(high, max(low, bin_value(bin_))))
                break
    return tuple(out)


def bin_value(bin_: int) -> float:
    """The value a bin stands for: within 1% of every value in it."""
    if bin_ == 0:
        return 0.0
    k = abs(bin_) - BIN_OFFSET
    return math.copysign(2 * GAMMA**k / (GAMMA + 1), bin_)


async def _buckets(
    pool: asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int, width_us: int
) -> list[Bucket]:
    parts = split(start_us, end_us)
    if width_us % HOUR_US:
        # An hour would straddle buckets: use minutes all the way through.
        parts = type(parts)(parts.start, parts.m1, parts.m2, parts.m2, parts.m2, parts.end)
    rows = await pool.fetch(BUCKETS, sensor_id, metric_type, *parts.bounds(), width_us)
    found = {r["bucket"]: r for r in rows}
    buckets = []
    for index in range(start_us // width_us, (end_us - 1) // width_us + 1):
        row = found.get(index)
        if row is None:
            buckets.append(Bucket(index * width_us, 0, None, None, None))
        else:
            buckets.append(
                Bucket(index * width_us, row["count"], row["min"], row["max"], row["sum"] / row["count"])
            )
    return buckets


def bucket_count(start_us: int, end_us: int, width_us: int) -> int:
    return (end_us - 1) // width_us - start_us // width_us + 1
