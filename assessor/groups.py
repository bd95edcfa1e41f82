"""AggregateSensors: a group of sensors (an id prefix) over a range, from the rollups alone: per
bucket across the group, and the group's sensors of the highest mean.

The range is widened to whole buckets, so that every bucket is whole rollups: hourly ones for widths
of whole hours, minute ones otherwise (ranges of at most 6 hours: a group of 10,000 sensors has
3.6 million minute rollups in 6 hours). The two aggregations are two queries, run at once.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass

import asyncpg

from assessor import hour_blocks
from assessor.aggregates import HOUR_US, MINUTE_US

# Widths under an hour read minute rollups: only over ranges this long.
MINUTE_RANGE_US = 6 * HOUR_US

# The conditions both queries share: the group's sensors ($1 <= id < $2, and the caller's prefixes
# when it has several: $6), the metric type ($3), the range of the rollups' times ($4, $5).
WHERE = """
WHERE sensor_id >= $1 AND sensor_id < $2 AND metric_type = $3 AND {time} >= $4 AND {time} < $5
  AND ($6::text[] IS NULL OR sensor_id ^@ ANY($6::text[]))
"""
# Per bucket: its sensors are the rows' when a bucket is one rollup per sensor, else distinct ones.
BUCKETS = """
SELECT date_bin($7::interval, {time}, TIMESTAMPTZ 'epoch') AS start, {sensors} AS sensors,
       sum(count)::bigint AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max
FROM {table} {where} GROUP BY 1
"""
# The sensors of the highest mean, and how many sensors the group has in the range.
TOP = """
SELECT sensor_id, sum(count)::bigint AS count, sum(sum) / sum(count) AS mean, min(min) AS min,
       max(max) AS max, count(*) OVER () AS sensors
FROM {table} {where} GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT $7
"""


@dataclass(frozen=True)
class GroupBucket:
    start_us: int
    sensors: int
    count: int
    sum: float
    min: float | None
    max: float | None


@dataclass(frozen=True)
class SensorSummary:
    sensor_id: str
    count: int
    mean: float
    min: float
    max: float


@dataclass(frozen=True)
class Group:
    start_us: int
    end_us: int
    sensors: int
    buckets: list[GroupBucket]
    top: list[SensorSummary]


def widened(start_us: int, end_us: int, width_us: int) -> tuple[int, int]:
    """The range made whole buckets: the start down, the end up, to multiples of the width."""
    return start_us - start_us % width_us, -(-end_us // width_us) * width_us


async def aggregate(
    pool: asyncpg.Pool, low: str, high: str, metric_type: str, prefixes: list[str] | None,
    start_us: int, end_us: int, width_us: int, top: int,
) -> Group:  # fmt: skip
    """The group of sensors with ids in [low, high) (and starting with one of `prefixes`, if
    given) over [start_us, end_us), already whole buckets of `width_us`."""
    hourly = width_us % HOUR_US == 0
    table, time, unit = (
        ("rollups_hour", "hour", HOUR_US) if hourly else ("rollups_minute", "minute", MINUTE_US)
    )
    where = WHERE.format(time=time)
    sensors = "count(*)" if width_us == unit else "count(DISTINCT sensor_id)"
    args = (low, high, metric_type, start_us, end_us, prefixes)
    buckets_sql = BUCKETS.format(time=time, sensors=sensors, table=table, where=where)
    top_sql = TOP.format(table=table, where=where)
    rows, ranked = await asyncio.gather(
        pool.fetch(buckets_sql, *args, datetime.timedelta(microseconds=width_us)),
        pool.fetch(top_sql, *args, top),
    )
    by_start = {r["start"]: r for r in rows}
    buckets = []
    for bucket_start in range(start_us, end_us, width_us):
        row = by_start.get(bucket_start)
        if row is None:
            buckets.append(GroupBucket(bucket_start, 0, 0, 0.0, None, None))
        else:
            buckets.append(
                GroupBucket(bucket_start, row["sensors"], row["count"], row["sum"], row["min"], row["max"])
            )
    return Group(
        start_us, end_us, ranked[0]["sensors"] if ranked else 0, buckets,
        [SensorSummary(r["sensor_id"], r["count"], r["mean"], r["min"], r["max"]) for r in ranked],
    )  # fmt: skip


def from_totals(start_us: int, end_us: int, width_us: int, totals: hour_blocks.Totals) -> Group:
    """A group as the hourly blocks sum it (assessor/hour_blocks.py)."""
    buckets = [
        GroupBucket(bucket_start, sensors, count, total, low, high)
        for bucket_start, (sensors, count, total, low, high) in zip(
            range(start_us, end_us, width_us), totals.buckets, strict=True
        )
    ]
    return Group(start_us, end_us, totals.sensors, buckets, [SensorSummary(*t) for t in totals.top])
