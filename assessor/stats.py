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
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from assessor import horizons, readings
from assessor.aggregates import HOUR_US, Aggregate, of_values, range_aggregate, split

EXACT_PERCENTILES_MAX = 20_000
PERCENTILES = (0.50, 0.95, 0.99)
# Histogram bins (see value_bin in saver/migrations/0002): 1% relative accuracy.
GAMMA = 1.01 / 0.99
BIN_OFFSET = 10_000

# The histograms of the whole hours; the readings of the partial hours at the ends are binned here
# (assessor/readings.py: they may be raw or packed).
HISTOGRAM = """
SELECT bin, sum(count)::bigint AS count FROM histogram_hour
WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $3 AND hour < $4
GROUP BY 1
"""

# Rollups of the whole minutes and hours, per bucket; the readings of the partial minutes at the
# ends are added by _buckets.
BUCKETS = """
WITH parts AS (
    SELECT (extract(epoch FROM minute) * 1000000)::bigint / $7 AS bucket, 1 AS part, sum(count) AS count,
           sum(sum ORDER BY minute) AS sum, min(min) AS min, max(max) AS max
    FROM rollups_minute
    WHERE sensor_id = $1 AND metric_type = $2
      AND ((minute >= $3 AND minute < $4) OR (minute >= $5 AND minute < $6))
    GROUP BY 1
    UNION ALL
    SELECT (extract(epoch FROM hour) * 1000000)::bigint / $7, 2, sum(count), sum(sum ORDER BY hour), min(min),
           max(max)
    FROM rollups_hour
    WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $4 AND hour < $5
    GROUP BY 1
)
SELECT bucket, sum(count)::bigint AS count, sum(sum ORDER BY part) AS sum, min(min) AS min, max(max) AS max
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
    aggregate, first, last, buckets, histogram, raw_from_us = await asyncio.gather(
        range_aggregate(pool, *key, start_us, end_us),
        readings.window(pool, *key, start_us, end_us, 1),
        readings.window(pool, *key, start_us, end_us, 1, newest_first=True),
        _buckets(pool, *key, start_us, end_us, width_us) if width_us else _nothing(),
        _histogram(pool, *key, start_us, h1, h2, end_us) if h1 < h2 else _nothing(),
        horizons.raw_from(pool, [metric_type], start_us),
    )
    percentiles = None
    # Exact percentiles need every raw reading of the range; the histograms outlive them.
    exact = raw_from_us is None and aggregate.count <= EXACT_PERCENTILES_MAX
    if aggregate.count and (exact or not histogram):
        percentiles = exact_percentiles((await readings.window(pool, *key, start_us, end_us)).values)
    elif aggregate.count:
        assert aggregate.min is not None and aggregate.max is not None
        percentiles = histogram_percentiles(histogram, aggregate.min, aggregate.max)
    return Stats(aggregate, _reading(first), _reading(last), percentiles, buckets, raw_from_us)


def _reading(found: readings.Window) -> Reading | None:
    if not len(found):
        return None
    return Reading(float(found.values[0]), int(found.times[0]), found.units[0], found.labels[0])


def exact_percentiles(values: np.ndarray) -> tuple[float, ...]:
    """Nearest rank, as PostgreSQL's percentile_disc: the first value, in order, at whose position
    the share of values reaches p."""
    ordered = np.sort(values)
    return tuple(float(ordered[max(1, math.ceil(p * len(ordered))) - 1]) for p in PERCENTILES)


def value_bins(values: np.ndarray) -> np.ndarray:
    """value_bin (saver/migrations/0002) of each value."""
    with np.errstate(divide="ignore"):
        k = np.clip(np.ceil(np.log(np.abs(values)) / math.log(GAMMA)), -9999, 9999)
    return np.where(np.abs(values) < 1e-300, 0, np.sign(values) * (BIN_OFFSET + k)).astype(np.int64)


async def _histogram(
    pool: asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, h1: int, h2: int, end_us: int
) -> list[tuple[int, int]]:
    """(bin, count) of the range's readings, sorted by bin: the histograms of its whole hours
    [h1, h2), the readings of the partial hours at its ends."""
    rows, head, tail = await asyncio.gather(
        pool.fetch(HISTOGRAM, sensor_id, metric_type, h1, h2),
        readings.window(pool, sensor_id, metric_type, start_us, h1),
        readings.window(pool, sensor_id, metric_type, h2, end_us),
    )
    counts = Counter({r["bin"]: r["count"] for r in rows})
    bins, found = np.unique(value_bins(np.concatenate((head.values, tail.values))), return_counts=True)
    counts.update(dict(zip(bins.tolist(), found.tolist(), strict=True)))
    return sorted(counts.items())


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
    rows, head, tail = await asyncio.gather(
        pool.fetch(BUCKETS, sensor_id, metric_type, parts.m1, parts.h1, parts.h2, parts.m2, width_us),
        readings.window(pool, sensor_id, metric_type, parts.start, parts.m1),
        readings.window(pool, sensor_id, metric_type, parts.m2, parts.end),
    )
    found = {r["bucket"]: Aggregate(r["count"], r["sum"], 0.0, r["min"], r["max"]) for r in rows}
    for part in (head, tail):
        indexes = part.times // width_us
        for index in np.unique(indexes).tolist():
            more = of_values(part.values[indexes == index])
            found[index] = found[index].plus(more) if index in found else more
    buckets = []
    for index in range(start_us // width_us, (end_us - 1) // width_us + 1):
        got = found.get(index)
        if got is None:
            buckets.append(Bucket(index * width_us, 0, None, None, None))
        else:
            buckets.append(Bucket(index * width_us, got.count, got.min, got.max, got.mean))
    return buckets


def bucket_count(start_us: int, end_us: int, width_us: int) -> int:
    return (end_us - 1) // width_us - start_us // width_us + 1
