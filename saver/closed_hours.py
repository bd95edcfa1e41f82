"""Writes into closed hours, and how they stay exact while compaction packs those hours.

An hour is closed once compaction_state.closed_before is past it (saver/compaction.py moves it
forward). A write reads closed_before FOR SHARE, so moving it waits for the writes that saw the old
value: after it has moved, no write stores into the newly closed hours without coming here. For
readings of closed hours (late ones, or resent), the write, still in its transaction:
1. takes each of their hours' lock shared (compaction takes it exclusive while it packs the hour:
   a reading is then either raw or packed, never moving under the check);
2. leaves out the readings already packed (a resend changes nothing: not stored, not counted);
3. queues their (series, hour) for compaction again.
Readings of open hours take none of this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import asyncpg
import numpy as np

from runtime import packed
from runtime.packed import HOUR_US

# The first key of an hour's advisory lock (the second is the hour's number since 1970).
HOUR_LOCK = 0x706B6864  # "pkhd"

CLOSED_BEFORE = "SELECT closed_before FROM compaction_state FOR SHARE"
# In order of hours, so that writes and compaction never wait on each other in a circle.
LOCK_SHARED = """
SELECT count(pg_advisory_xact_lock_shared($1, h)) FROM (SELECT h FROM unnest($2::int[]) AS h ORDER BY h) hours
"""
PACKED = """
SELECT series_id, hour, readings FROM readings_packed
WHERE (series_id, hour) IN (SELECT * FROM unnest($1::int[], $2::timestamptz[]))
"""
QUEUE = """
INSERT INTO compaction_queue (series_id, hour)
SELECT * FROM unnest($1::int[], $2::timestamptz[])
ON CONFLICT (series_id, hour) DO UPDATE SET queued_at = now()
"""

# A row of readings_raw: series id, attributes id, time (µs), value.
Row = tuple[int, int, int, float]


async def unpacked(conn: asyncpg.Connection, rows: Sequence[Row]) -> Sequence[Row]:
    """`rows` but those already packed (see the module's docstring); in the write's transaction."""
    closed = await conn.fetchval(CLOSED_BEFORE)
    late: dict[tuple[int, int], list[int]] = defaultdict(list)  # (series, hour) -> indexes in rows
    for i, row in enumerate(rows):
        if row[2] < closed:
            late[row[0], row[2] // HOUR_US].append(i)
    if not late:
        return rows
    await conn.fetchval(LOCK_SHARED, HOUR_LOCK, sorted({hour for _, hour in late}))
    series = [s for s, _ in late]
    hours = [hour * HOUR_US for _, hour in late]
    stored: set[int] = set()
    for found in await conn.fetch(PACKED, series, hours):
        indexes = late[found["series_id"], found["hour"] // HOUR_US]
        times = np.fromiter((rows[i][2] for i in indexes), np.int64, len(indexes))
        already = np.isin(times, packed.unpack(found["readings"]).times)
        stored.update(i for i, isin in zip(indexes, already.tolist(), strict=True) if isin)
    await conn.execute(QUEUE, series, hours)
    return [row for i, row in enumerate(rows) if i not in stored] if stored else rows
