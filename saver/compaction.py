"""Compaction: the raw readings of closed hours become packed rows, one per series and hour
(saver/migrations/0011, runtime/packed.py).

A pass (the saver runs one every compaction_interval_s, on a connection of its own):
1. closes the hours that ended compaction_grace_s ago or more: moves closed_before forward, which
   waits for the writes that saw the old value (saver/closed_hours.py);
2. packs, hour after hour from compacted_before, the raw readings of closed hours, and moves
   compacted_before past each;
3. packs again the (series, hour) that writes into closed hours queued grace_s ago or more.
An hour is packed in chunks of at most CHUNK_READINGS readings, a transaction each, holding the
hour's lock: the chunk's raw rows are deleted (their copy out is the read), merged into the series'
packed row of the hour if there is one (a reading already packed wins: it was stored first), and the
packed rows written. A chunk is whole series, or, for a series with more readings in the hour, a
slice of its hour in time; the hour's lock is then held from its first slice to its last, so that
no late write comes in between. What a pass holds in memory is so bounded by the chunk whatever the
fleet's size (~25 MB); a series sliced adds ~100 bytes a reading of its hour while its packed row is
merged and written again (~36 MB for an hour at 100 Hz). A pass stopped anywhere, kill -9
included, leaves every reading raw or packed, never both, never neither; the next pass goes on from
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from runtime import packed, postgres
from runtime.packed import HOUR_US
from saver.closed_hours import HOUR_LOCK

log = logging.getLogger(__name__)

# Readings per transaction: ~42 bytes each copied out, ~60 more while sorted and packed (~25 MB in all).
CHUNK_READINGS = 250_000
QUEUE_BATCH = 5_000

STATE = "SELECT closed_before, compacted_before FROM compaction_state"
CLOSE = "UPDATE compaction_state SET closed_before = $1 WHERE closed_before < $1"
COMPACTED = "UPDATE compaction_state SET compacted_before = $1 WHERE compacted_before < $1"
NEXT_RAW = "SELECT min(reading_time) FROM readings_raw WHERE reading_time >= $1 AND reading_time < $2"
SERIES_OF_HOUR = """
SELECT series_id, count(*) FROM readings_raw WHERE reading_time >= $1 AND reading_time < $2
  AND ($3::int[] IS NULL OR series_id = ANY($3::int[]))
GROUP BY 1 ORDER BY 1
"""
# Where a slice of a series' hour ends: the time of its reading after the slice's first $4.
SLICE_END = """
SELECT reading_time FROM readings_raw WHERE series_id = $1 AND reading_time >= $2 AND reading_time < $3
ORDER BY reading_time OFFSET $4 LIMIT 1
"""
HOURS_OF = """
SELECT DISTINCT date_trunc('hour', reading_time, 'UTC') AS hour FROM readings_raw
WHERE series_id = ANY($1::int[]) AND reading_time < $2 ORDER BY 1
"""
QUEUED = """
SELECT series_id, hour FROM compaction_queue
WHERE queued_at <= now() - make_interval(secs => $1) AND ($2::int[] IS NULL OR series_id = ANY($2::int[]))
ORDER BY hour, series_id LIMIT $3
"""
LOCK = "SELECT pg_advisory_xact_lock($1, $2)"
LOCK_SESSION = "SELECT pg_advisory_lock($1, $2)"
UNLOCK_SESSION = "SELECT pg_advisory_unlock($1, $2)"
TAKE_RAW = """
DELETE FROM readings_raw WHERE series_id = ANY($1::int[]) AND reading_time >= $2 AND reading_time < $3
RETURNING series_id, attributes_id, reading_time, value
"""
PACKED_ROWS = """
SELECT series_id, readings FROM readings_packed WHERE series_id = ANY($1::int[]) AND hour = $2 FOR UPDATE
"""
STAGING = "CREATE TEMP TABLE IF NOT EXISTS staging_packed (LIKE readings_packed) ON COMMIT DELETE ROWS"
WRITE_PACKED = """
INSERT INTO readings_packed SELECT * FROM staging_packed
ON CONFLICT (series_id, hour) DO UPDATE SET
    first_time = excluded.first_time, last_time = excluded.last_time, count = excluded.count,
    readings = excluded.readings
"""
DEQUEUE = "DELETE FROM compaction_queue WHERE series_id = ANY($1::int[]) AND hour = $2"

# A row of TAKE_RAW in binary COPY: a field count, then each field's length and value (big-endian).
_RAW_ROW = np.dtype([
    ("fields", ">i2"), ("l1", ">i4"), ("series", ">i4"), ("l2", ">i4"), ("attributes", ">i4"),
    ("l3", ">i4"), ("time", ">i8"), ("l4", ">i4"), ("value", ">f8"),
])  # fmt: skip
_COPY_HEADER = 19  # signature, flags, header extension length
_COPY_TRAILER = 2


@dataclass
class Pass:
    """What a pass did: hours packed, (series, hour) rows written, readings packed, and this
    process's CPU for them (PostgreSQL's own is not in it)."""

    hours: int = 0
    rows: int = 0
    readings: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0


async def setup_connection(conn: asyncpg.Connection) -> None:
    await postgres.setup_connection(conn)  # times as µs
    await conn.execute(STAGING)


async def compact(
    conn: asyncpg.Connection, grace_s: float, now_us: int, only: Sequence[int] | None = None
) -> Pass:
    """One pass (see the module's docstring) at `now_us`; with `only`, of those series alone
    (compacted_before then stays where it is). `conn`: set up by setup_connection."""
    began, cpu = time.perf_counter(), time.process_time()
    done = Pass()
    closing = (now_us - int(grace_s * 1e6)) // HOUR_US * HOUR_US
    await conn.execute(CLOSE, closing)
    closed_before, at = await conn.fetchrow(STATE)
    # Another pass (with a shorter grace) may have closed later hours: their readings wait for ours.
    until = min(closed_before, closing)
    series = list(only) if only is not None else None
    if series is None:
        while (first := await conn.fetchval(NEXT_RAW, at, until)) is not None:
            hour = first // HOUR_US * HOUR_US
            await _pack_hour(conn, hour, None, done)
            at = hour + HOUR_US
            await conn.execute(COMPACTED, at)
        await conn.execute(COMPACTED, until)
    else:  # those series' hours alone, found through their key
        for row in await conn.fetch(HOURS_OF, series, until):
            await _pack_hour(conn, row["hour"], series, done)
    while queued := await conn.fetch(QUEUED, grace_s, series, QUEUE_BATCH):
        by_hour: dict[int, list[int]] = {}
        for row in queued:
            by_hour.setdefault(row["hour"], []).append(row["series_id"])
        for hour, ids in by_hour.items():
            await _pack_series(conn, hour, ids, done)
    done.seconds, done.cpu_s = time.perf_counter() - began, time.process_time() - cpu
    return done


async def _pack_hour(conn: asyncpg.Connection, hour: int, series: list[int] | None, done: Pass) -> None:
    """Packs the raw readings of an hour (of `series`, or all)."""
    await _pack_series(conn, hour, series, done)
    done.hours += 1


async def _pack_series(conn: asyncpg.Connection, hour: int, series: list[int] | None, done: Pass) -> None:
    """Packs the raw readings of `series` (or all) in `hour`, a chunk at a time. The series listed
    that had none raw are looked at again under the hour's lock (a late write may have just stored
    some) and taken off the queue."""
    counts = [(r[0], r[1]) for r in await conn.fetch(SERIES_OF_HOUR, hour, hour + HOUR_US, series)]
    for ids, readings in chunks(counts, CHUNK_READINGS):
        if readings > CHUNK_READINGS:
            await _pack_slices(conn, hour, ids[0], done)
        else:
            await _pack(conn, hour, ids, done)
    if series is not None and (none_raw := sorted(set(series) - {s for s, _ in counts})):
        await _pack(conn, hour, none_raw, done)


def chunks(counts: Sequence[tuple[int, int]], most: int) -> list[tuple[list[int], int]]:
    """(series, readings) grouped in order into chunks of at most `most` readings, each with its
    readings; a series with more is a chunk of its own."""
    found: list[tuple[list[int], int]] = []
    ids: list[int] = []
    readings = 0
    for series_id, n in counts:
        if ids and readings + n > most:
            found.append((ids, readings))
            ids, readings = [], 0
        ids.append(series_id)
        readings += n
    if ids:
        found.append((ids, readings))
    return found


async def _pack_slices(conn: asyncpg.Connection, hour: int, series_id: int, done: Pass) -> None:
    """Packs a series' hour of more than CHUNK_READINGS readings in slices of time, a transaction
    each, under the hour's lock held across them (a session's: it goes with the connection)."""
    end = hour + HOUR_US
    await conn.execute(LOCK_SESSION, HOUR_LOCK, hour // HOUR_US)
    try:
        since: int | None = hour
        while since is not None:
            until = await conn.fetchval(SLICE_END, series_id, since, end, CHUNK_READINGS)
            await _pack(conn, hour, [series_id], done, since, until)
            since = until
    except BaseException:
        # Cancelled or failed: released if the connection still answers (else its end releases
        # it), and what stopped the pass is what the caller sees.
        with contextlib.suppress(Exception):
            await conn.execute(UNLOCK_SESSION, HOUR_LOCK, hour // HOUR_US)
        raise
    await conn.execute(UNLOCK_SESSION, HOUR_LOCK, hour // HOUR_US)


async def _pack(
    conn: asyncpg.Connection, hour: int, series: list[int], done: Pass, since: int | None = None,
    until: int | None = None,
) -> None:  # fmt: skip
    """Packs the raw readings of `series` in `hour` (from `since`, to `until`: a slice of it) into
    their packed rows, in one transaction; the slice that reaches the hour's end takes them off the
    queue and counts their rows."""
    whole_rest = until is None
    async with conn.transaction():
        await conn.execute(LOCK, HOUR_LOCK, hour // HOUR_US)
        out = io.BytesIO()
        await conn.copy_from_query(
            TAKE_RAW, series, since or hour, until or hour + HOUR_US, output=out, format="binary"
        )
        data = out.getbuffer()
        raw = np.frombuffer(data, _RAW_ROW, (len(data) - _COPY_HEADER - _COPY_TRAILER) // _RAW_ROW.itemsize,
                            _COPY_HEADER)  # fmt: skip
        kept = {
            r["series_id"]: packed.unpack(r["readings"]) for r in await conn.fetch(PACKED_ROWS, series, hour)
        }
        rows = []
        for series_id, more in _by_series(raw):
            merged = packed.merge(kept[series_id], more) if series_id in kept else more
            rows.append((series_id, hour, int(merged.times[0]), int(merged.times[-1]), len(merged),
                         packed.pack(merged)))  # fmt: skip
        if rows:
            await conn.copy_records_to_table("staging_packed", records=rows)
            await conn.execute(WRITE_PACKED)
        if whole_rest:
            await conn.execute(DEQUEUE, series, hour)
    done.rows += len(rows) if whole_rest else 0
    done.readings += len(raw)


def _by_series(raw: np.ndarray) -> list[tuple[int, packed.Readings]]:
    """The rows of a binary COPY of TAKE_RAW, per series in time order."""
    if not len(raw):
        return []
    order = np.lexsort((raw["time"], raw["series"]))
    series = raw["series"][order].astype(np.int64)
    times = raw["time"][order].astype(np.int64) + postgres.PG_EPOCH_US  # binary COPY counts from 2000-01-01
    values = raw["value"][order].astype(np.float64)
    attributes = raw["attributes"][order].astype(np.int64)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(series)) + 1, [len(series)]))
    return [
        (int(series[a]), packed.Readings(times[a:b], values[a:b], attributes[a:b]))
        for a, b in itertools.pairwise(starts.tolist())
    ]


async def keep_compacting(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    grace_s: float,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """A pass now and every `interval_s` until stopped; a failed pass is logged and tried again then
    (nothing is lost meanwhile: readings stay raw)."""
    while not stop.is_set():
        try:
            conn = await connect()
            try:
                await setup_connection(conn)
                done = await compact(conn, grace_s, time.time_ns() // 1000)
            finally:
                await conn.close()
            if done.readings:
                log.info(
                    "compaction: %s readings of %d hours into %s rows in %.1f s (%.2f µs CPU a reading here)",
                    f"{done.readings:,}", done.hours, f"{done.rows:,}", done.seconds,
                    done.cpu_s / done.readings * 1e6,
                )  # fmt: skip
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("compaction pass failed (tried again in %.0f s): %s", interval_s, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
