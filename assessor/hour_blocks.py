"""Every sensor's hourly rollup of a metric type in an hour, as arrays sorted by sensor id (a block):
what AggregateSensors reads for a group over whole hours, sliced by the group's prefix.

A group of 10,000 sensors over a day is 240,000 hourly rollups: PostgreSQL takes about 280 ms here
to aggregate them per bucket and per sensor, every time. Blocks are read once (10,000 rows of one
hour, by the rollups' (metric_type, hour) index) and kept: a query slices 24 of them and sums
arrays. The hour under way (and the one before it, for two minutes after it ended) is read at every
query: readings arrive for it all the time. An older block is served as kept and read again in the
background once it was read group_refresh_s ago (60 s), so a reading that arrives hours late shows
within about that long.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from assessor.aggregates import HOUR_US

log = logging.getLogger(__name__)

# Blocks kept: a week of one metric type (a block of 10,000 sensors is about 0.4 MB).
MAX_BLOCKS = 200
# Blocks of hours still open, or that ended less than this long ago, are read at every query: the
# readings of a hour's last seconds reach the rollups a moment after it ends.
SETTLE_US = 120_000_000

# One row of arrays (asyncpg decodes them in C, not a record per sensor), in one order; sorted here,
# by code point as Python compares the ids (whatever the database's collation).
BLOCK = """
SELECT coalesce(array_agg(sensor_id), '{}') AS sensors, coalesce(array_agg(count), '{}') AS count,
       coalesce(array_agg(sum), '{}') AS sum, coalesce(array_agg(min), '{}') AS min,
       coalesce(array_agg(max), '{}') AS max
FROM rollups_hour WHERE metric_type = $1 AND hour = $2
"""

# How a block is read: the assessor's Database.query (the replica or the primary).
Query = Callable[[Callable[[asyncpg.Pool], Awaitable[list[asyncpg.Record]]]], Awaitable[list[asyncpg.Record]]]


@dataclass(frozen=True)
class Block:
    """One hour of one metric type: its sensors (sorted), their ids in the metric type's numbering,
    and their rollups."""

    sensors: list[str]
    ids: np.ndarray  # int64
    count: np.ndarray  # int64
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
    read_at: float  # monotonic

    def span(self, low: str, high: str) -> slice:
        """The rows of the sensors with ids in [low, high)."""
        return slice(bisect.bisect_left(self.sensors, low), bisect.bisect_left(self.sensors, high))


class HourBlocks:
    def __init__(self, refresh_s: float) -> None:
        # A kept block is read again once it was read this long ago (AssessorSettings.group_refresh_s).
        self._refresh_s = refresh_s
        self._blocks: OrderedDict[tuple[str, int], Block] = OrderedDict()
        # Per metric type, a number for each sensor id seen (the sensor's row in per-sensor sums).
        self._numbers: dict[str, dict[str, int]] = {}
        self._names: dict[str, list[str]] = {}  # per metric type, the ids by number
        self._reading: dict[tuple[str, int], asyncio.Task[Block]] = {}

    async def blocks(self, query: Query, metric_type: str, hours: Sequence[int], now_us: int) -> list[Block]:
        """The blocks of `hours` (µs), read where not kept or too recent to keep."""
        found: list[Block | None] = []
        reads = {}
        for hour in hours:
            key = (metric_type, hour)
            kept = self._blocks.get(key)
            if kept is None or hour + HOUR_US + SETTLE_US > now_us:
                reads[len(found)] = self._read(query, key)
            else:
                self._blocks.move_to_end(key)
                if time.monotonic() - kept.read_at > self._refresh_s and key not in self._reading:
                    self._refresh(query, key)
            found.append(kept)
        for at, block in zip(reads, await asyncio.gather(*reads.values()), strict=True):
            found[at] = block
        return [block for block in found if block is not None]

    def _refresh(self, query: Query, key: tuple[str, int]) -> None:
        """Reads a kept block again in the background (one read at a time per block)."""
        task = asyncio.create_task(self._read(query, key))
        self._reading[key] = task

        def done(_: asyncio.Task[Block]) -> None:
            self._reading.pop(key, None)
            if not task.cancelled() and task.exception() is not None:
                log.warning("hourly block %s not read again: %s", key, task.exception())

        task.add_done_callback(done)

    async def _read(self, query: Query, key: tuple[str, int]) -> Block:
        metric_type, hour = key
        (row,) = await query(lambda pool: pool.fetch(BLOCK, metric_type, hour))
        numbers = self._numbers.setdefault(metric_type, {})
        names = self._names.setdefault(metric_type, [])
        for sensor in row["sensors"]:
            if sensor not in numbers:
                numbers[sensor] = len(names)
                names.append(sensor)
        order = np.argsort(np.array(row["sensors"], dtype=str), kind="stable")
        ids = np.fromiter(map(numbers.__getitem__, row["sensors"]), np.int64, len(row["sensors"]))[order]
        column = {name: np.array(row[name], np.float64)[order] for name in ("sum", "min", "max")}
        block = Block(
            [names[i] for i in ids.tolist()],  # the numbering's strings: every block of the type shares them
            ids, np.array(row["count"], np.int64)[order], column["sum"], column["min"], column["max"],
            time.monotonic(),
        )  # fmt: skip
        self._blocks[key] = block
        self._blocks.move_to_end(key)
        while len(self._blocks) > MAX_BLOCKS:
            self._blocks.popitem(last=False)
        return block

    def names(self, metric_type: str) -> list[str]:
        """The sensor ids of the metric type's numbering, by number."""
        return self._names.get(metric_type, [])


@dataclass(frozen=True)
class Totals:
    """A group over blocks: per bucket (sensors, count, sum, min, max), the sensors with readings,
    and the top ones by mean, each (id, count, mean, min, max)."""

    buckets: list[tuple[int, int, float, float | None, float | None]]
    sensors: int
    top: list[tuple[str, int, float, float, float]]


def aggregate(
    blocks: Sequence[Block], names: Sequence[str], low: str, high: str, per_bucket: int, top: int
) -> Totals:
    """Of the sensors with ids in [low, high), over `blocks` (`names`: their numbering's ids), in
    buckets of `per_bucket` consecutive blocks; the `top` of the highest mean, highest first (ties by
    id)."""
    spans = [b.span(low, high) for b in blocks]
    buckets: list[tuple[int, int, float, float | None, float | None]] = []
    for first in range(0, len(blocks), per_bucket):
        group = zip(blocks[first : first + per_bucket], spans[first : first + per_bucket], strict=True)
        parts = [(b, s) for b, s in group if s.stop > s.start]
        if not parts:
            buckets.append((0, 0, 0.0, None, None))
            continue
        ids = [b.ids[s] for b, s in parts]
        sensors = len(ids[0]) if len(ids) == 1 else int(np.unique(np.concatenate(ids)).size)
        count = sum(int(b.count[s].sum()) for b, s in parts)
        total = sum(float(b.sum[s].sum()) for b, s in parts)
        low_v = min(float(b.min[s].min()) for b, s in parts)
        high_v = max(float(b.max[s].max()) for b, s in parts)
        buckets.append((sensors, count, total, low_v, high_v))
    taken = [(b, s) for b, s in zip(blocks, spans, strict=True) if s.stop > s.start]
    if not taken:
        return Totals(buckets, 0, [])
    numbers = np.concatenate([b.ids[s] for b, s in taken])
    counts = np.bincount(numbers, weights=np.concatenate([b.count[s] for b, s in taken]))
    sums = np.bincount(numbers, weights=np.concatenate([b.sum[s] for b, s in taken]))
    present = np.flatnonzero(counts)
    means = sums[present] / counts[present]
    # The top by mean, and those tied with the last of them, to order the ties by id.
    chosen = present
    if len(present) > top:
        bound = np.partition(means, len(means) - top)[len(means) - top]
        chosen = present[means >= bound]
    ranked = sorted(chosen.tolist(), key=lambda i: (-sums[i] / counts[i], names[i]))[:top]
    summaries = []
    for number in ranked:
        name, lows, highs = names[number], [], []
        for b, s in taken:
            at = bisect.bisect_left(b.sensors, name, s.start, s.stop)
            if at < s.stop and b.sensors[at] == name:
                lows.append(float(b.min[at]))
                highs.append(float(b.max[at]))
        summaries.append(
            (name, int(counts[number]), float(sums[number] / counts[number]), min(lows), max(highs))
        )
    return Totals(buckets, len(present), summaries)
