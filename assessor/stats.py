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
from assessor.aggregates import HOUR_US, Aggregate, Split, of_values, rollups, split, with_ends

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

# Rollups of the whole minutes and hours, in time order, to sum per bucket (_buckets): as
# aggregates.ROLLUPS sums a range, a bucket's minutes and its hours each in time order, then the two.
# (Summed here, not by `sum(... ORDER BY ...)`, which sorts once per bucket: 3 ms for 720 buckets.)
BUCKET_ROLLUPS = """
SELECT 1 AS part, minute AS time, count, sum, min, max FROM rollups_minute
WHERE sensor_id = $1 AND metric_type = $2
  AND ((minute >= $3 AND minute < $4) OR (minute >= $5 AND minute < $6))
UNION ALL
SELECT 2, hour, count, sum, min, max FROM rollups_hour
WHERE sensor_id = $1 AND metric_type = $2 AND hour >= $4 AND hour < $5
ORDER BY part, time
"""


@dataclass(frozen=True)
class Reading:
    value: float
    time_us: int
    unit: str | None
    labels: str | None  # JSON, as stored


@dataclass(slots=True)  # not frozen: made faster (up to a thousand per answer)
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
    parts = split(start_us, end_us)
    # One round of queries in parallel. The readings at the ends are read once, times and values:
    # the partial hours when the range has whole hours (the histogram's), which hold the partial
    # minutes (the aggregate's and the buckets'), else the partial minutes.
    hours = parts.h1 < parts.h2
    head_end, tail_start = (parts.h1, parts.h2) if hours else (parts.m1, parts.m2)
    whole, head, tail, bucket_rows, histogram_rows, raw_from_us = await asyncio.gather(
        rollups(pool, *key, parts),
        readings.values(pool, *key, start_us, head_end),
        readings.values(pool, *key, tail_start, end_us),
        _bucket_rows(pool, *key, parts, width_us) if width_us else _nothing(),
        pool.fetch(HISTOGRAM, *key, parts.h1, parts.h2) if hours else _nothing(),
        horizons.raw_from(pool, [metric_type], start_us),
    )
    aggregate = with_ends(whole, parts, head, tail)
    if not aggregate.count:
        buckets = _buckets([], head, tail, parts, width_us) if width_us else []
        return Stats(aggregate, None, None, None, buckets, raw_from_us)
    # The first and last readings, with unit and labels: within the ends when they hold any (a
    # range of one partition to plan), else anywhere in the range.
    first_until = int(head.times[0]) + 1 if len(head) else end_us
    last_from = int(tail.times[-1]) if len(tail) else start_us
    first, last = await asyncio.gather(
        readings.window(pool, *key, start_us, first_until, 1),
        readings.window(pool, *key, last_from, end_us, 1, newest_first=True),
    )
    bins = _histogram(histogram_rows, np.concatenate((head.values, tail.values))) if hours else []
    # Exact percentiles need every raw reading of the range; the histograms outlive them.
    if (raw_from_us is None and aggregate.count <= EXACT_PERCENTILES_MAX) or not bins:
        percentiles = exact_percentiles((await readings.values(pool, *key, start_us, end_us)).values)
    else:
        assert aggregate.min is not None and aggregate.max is not None
        percentiles = histogram_percentiles(bins, aggregate.min, aggregate.max)
    buckets = _buckets(bucket_rows, head, tail, parts, width_us) if width_us else []
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


def _histogram(rows: list[asyncpg.Record], ends: np.ndarray) -> list[tuple[int, int]]:
    """(bin, count) of a range's readings, sorted by bin: the histograms of its whole hours (rows),
    the values of its partial hours at the ends."""
    counts = Counter({r["bin"]: r["count"] for r in rows})
    bins, found = np.unique(value_bins(ends), return_counts=True)
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


async def _bucket_rows(
    pool: asyncpg.Pool, sensor_id: str, metric_type: str, parts: Split, width_us: int
) -> list[asyncpg.Record]:
    """The rollups of the whole minutes and hours, per bucket."""
    h1, h2 = (parts.h1, parts.h2) if width_us % HOUR_US == 0 else (parts.m2, parts.m2)
    # (An hour that would straddle buckets is read as minutes.)
    rows: list[asyncpg.Record] = await pool.fetch(
        BUCKET_ROLLUPS, sensor_id, metric_type, parts.m1, h1, h2, parts.m2
    )
    return rows


def _buckets(
    rows: list[asyncpg.Record], head: readings.Values, tail: readings.Values, parts: Split, width_us: int
) -> list[Bucket]:
    """The buckets of the range: rollups (rows of BUCKET_ROLLUPS) and the readings of its partial
    minutes at the ends (from head and tail, which may hold more)."""
    # Per bucket: count, sum, min, max of its minutes, and of its hours, each summed in time order.
    minutes: dict[int, list[Any]] = {}
    hours: dict[int, list[Any]] = {}
    for part, time_us, count, sum_, low, high in rows:
        into = minutes if part == 1 else hours
        got = into.get(index := time_us // width_us)
        if got is None:
            into[index] = [count, sum_, low, high]
        else:
            got[0] += count
            got[1] += sum_
            got[2] = min(got[2], low)
            got[3] = max(got[3], high)
    ends: dict[int, Aggregate] = {}
    for part in (head.between(parts.start, parts.m1), tail.between(parts.m2, parts.end)):
        indexes = part.times // width_us
        for index in np.unique(indexes).tolist():
            more = of_values(part.values[indexes == index])
            ends[index] = ends[index].plus(more) if index in ends else more
    buckets = []
    for index in range(parts.start // width_us, (parts.end - 1) // width_us + 1):
        minute, hour = minutes.get(index), hours.get(index)
        if minute is not None and hour is not None:
            count, sum_ = minute[0] + hour[0], minute[1] + hour[1]
            minute = [count, sum_, min(minute[2], hour[2]), max(minute[3], hour[3])]
        got = minute or hour
        if index in ends:  # at most two buckets
            total = (
                ends[index]
                if got is None
                else Aggregate(got[0], got[1], 0.0, got[2], got[3]).plus(ends[index])
            )
            buckets.append(Bucket(index * width_us, total.count, total.min, total.max, total.mean))
        elif got is not None:
            buckets.append(Bucket(index * width_us, got[0], got[2], got[3], got[1] / got[0]))
        else:
            buckets.append(Bucket(index * width_us, 0, None, None, None))
    return buckets


def bucket_count(start_us: int, end_us: int, width_us: int) -> int:
    return (end_us - 1) // width_us - start_us // width_us + 1
