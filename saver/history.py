"""Keeps history bounded: the readings' day partitions made ahead, expired history removed.

The saver runs a pass at start and every history_interval_s, as the schema's owner, on a connection
of its own (never one of the writers'). A pass, in this order:
1. drops the day partitions in which every metric type's readings have expired;
2. makes the day partitions from the oldest day still kept (with no retention: the oldest partition,
   or today) to partitions_ahead_days after today;
3. deletes the expired readings of each retention class (a metric type with a retention of its own,
   or all the others) that whole partitions cannot take away: a type kept shorter than others shares
   their partitions. Only the days that expired since the last pass are read, once a day;
4. deletes expired readings from the default partition (readings far in the past land there), and
   the rollups and events past their own, longer, retention.
Rollups are never touched by the readings' retention: statistics over expired days stay as they were.
history_horizons records, per kind and metric type, the time from which history is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import asyncpg

from runtime import postgres
from saver import partitions
from saver.retention import Retention, cutoff

log = logging.getLogger(__name__)

# A cutoff of "nothing expires": before any reading (the receiver refuses times before 2000).
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
# The retention class of every metric type without a retention of its own (history_horizons).
OTHER_TYPES = ""

HORIZON = "SELECT kept_from FROM history_horizons WHERE kind = $1 AND metric_type = $2"
RAISE_HORIZON = """
INSERT INTO history_horizons AS h (kind, metric_type, kept_from) VALUES ($1, $2, $3)
ON CONFLICT (kind, metric_type) DO UPDATE SET kept_from = greatest(h.kept_from, excluded.kept_from)
"""
# A type that lost its own retention is deleted with the others from now on.
FOLLOW_OTHERS = """
UPDATE history_horizons SET kept_from = greatest(kept_from, $2)
WHERE kind = 'readings' AND metric_type <> '' AND metric_type <> ALL($1::text[])
"""


def _deleting(which: str, raw_time: str, packed_time: str) -> str:
    """A statement deleting the raw and packed readings of the series `which` selects at the times
    the conditions select; it returns how many readings it deleted. (Cutoffs fall on day
    boundaries: a packed row, an hour, is deleted whole.)"""
    return f"""
WITH raw AS (
    DELETE FROM readings_raw r USING series s
    WHERE r.series_id = s.series_id AND {which} AND {raw_time.format(t="r.reading_time")} RETURNING 1
), packed AS (
    DELETE FROM readings_packed p USING series s
    WHERE p.series_id = s.series_id AND {which} AND {packed_time.format(t="p.hour")} RETURNING p.count
)
SELECT (SELECT count(*) FROM raw) + (SELECT coalesce(sum(count), 0) FROM packed)
"""  # noqa: S608 - conditions of this module


IN_RANGE = "{t} >= $2 AND {t} < $3"
DELETE_TYPE = _deleting("s.metric_type = $1", IN_RANGE, IN_RANGE)
DELETE_OTHER_TYPES = _deleting("s.metric_type <> ALL($1::text[])", IN_RANGE, IN_RANGE)
# Readings far in the past land in the default partitions; each type has its cutoff.
BEFORE_CUTOFF = """{t} < coalesce(
    (SELECT c.cutoff FROM unnest($1::text[], $2::timestamptz[]) AS c (metric_type, cutoff)
     WHERE c.metric_type = s.metric_type),
    $3)"""
DELETE_FROM_DEFAULT = (
    _deleting("true", BEFORE_CUTOFF, BEFORE_CUTOFF)
    .replace("FROM readings_raw r", "FROM readings_raw_default r")
    .replace("FROM readings_packed p", "FROM readings_packed_default p")
)
# Kind, then what to delete of it before $1.
OTHER_HISTORY = {
    "rollups": (
        "DELETE FROM rollups_minute WHERE minute < $1",
        "DELETE FROM rollups_hour WHERE hour < $1",
        "DELETE FROM histogram_hour WHERE hour < $1",
    ),
    # An alarm goes with the events of its changes once it is cleared; an active one stays.
    "events": ("DELETE FROM events WHERE reading_time < $1", "DELETE FROM alarms WHERE clear_time < $1"),
}


@dataclass
class Pass:
    """What one pass did."""

    made: list[str] = field(default_factory=list)
    moved: int = 0
    dropped: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    reclaimed: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def maintain(conn: asyncpg.Connection, retention: Retention, ahead_days: int, now: datetime) -> Pass:
    """One pass (see the module's docstring) at time `now`."""
    began = time.perf_counter()
    done = Pass()
    longest = retention.longest_readings_cutoff(now)
    await _drop_expired(conn, longest, done)
    await _make_ahead(conn, longest, now.date(), (now + timedelta(days=ahead_days)).date(), done)
    await _delete_expired_readings(conn, retention, now, done)
    done.reclaimed = await partitions.reclaim(conn, await compacted_day(conn))
    for kind, days in (("rollups", retention.rollups_days), ("events", retention.events_days)):
        await _delete_other_history(conn, kind, cutoff(days, now), done)
    done.seconds = time.perf_counter() - began
    return done


async def compacted_day(conn: asyncpg.Connection) -> date:
    """The first day not wholly compacted (saver/compaction.py)."""
    value: datetime = await conn.fetchval("SELECT compacted_before FROM compaction_state")
    return value.astimezone(UTC).date()


async def _drop_expired(conn: asyncpg.Connection, longest: datetime | None, done: Pass) -> None:
    if longest is None:
        return
    days = await partitions.existing(conn)
    for day in sorted(d for d in days if partitions.day_bounds(d)[1] <= longest):
        await partitions.drop(conn, day)
        done.dropped.append(partitions.partition_name(day))


async def _make_ahead(
    conn: asyncpg.Connection, longest: datetime | None, today: date, last: date, done: Pass
) -> None:
    days = await partitions.existing(conn)
    # Back to the oldest day kept, so that readings stored late (a backfill) find their day's.
    first = longest.date() if longest is not None else min(days, default=today)
    for day in partitions.days_to_make(first, last, days):
        done.moved += await partitions.make(conn, day)
        done.made.append(partitions.partition_name(day))


async def _delete_expired_readings(
    conn: asyncpg.Connection, retention: Retention, now: datetime, done: Pass
) -> None:
    own = sorted(retention.readings_days_by_type)
    classes: list[tuple[str, str, str | list[str]]] = [(t, DELETE_TYPE, t) for t in own]
    classes.append((OTHER_TYPES, DELETE_OTHER_TYPES, own))
    for key, statement, which in classes:
        until = retention.readings_cutoff(key, now)
        if until is None:
            continue
        since = await conn.fetchval(HORIZON, "readings", key)
        if since is None and key:  # until now, the type was deleted with the others
            since = await conn.fetchval(HORIZON, "readings", OTHER_TYPES)
        if since is not None and since >= until:
            continue  # done today
        done.deleted[f"readings:{key or '*'}"] = await conn.fetchval(statement, which, since or NEVER, until)
        await conn.execute(RAISE_HORIZON, "readings", key, until)
    if retention.readings_days:
        await conn.execute(FOLLOW_OTHERS, own, cutoff(retention.readings_days, now))
    cutoffs = [retention.readings_cutoff(t, now) or NEVER for t in own]
    done.deleted["readings:default partition"] = await conn.fetchval(
        DELETE_FROM_DEFAULT, own, cutoffs, cutoff(retention.readings_days, now) or NEVER
    )


async def _delete_other_history(
    conn: asyncpg.Connection, kind: str, until: datetime | None, done: Pass
) -> None:
    if until is None:
        return
    since = await conn.fetchval(HORIZON, kind, OTHER_TYPES)
    if since is not None and since >= until:
        return
    deleted = 0
    for statement in OTHER_HISTORY[kind]:
        deleted += int((await conn.execute(statement, until)).rsplit(" ", 1)[1])
    done.deleted[kind] = deleted
    await conn.execute(RAISE_HORIZON, kind, OTHER_TYPES, until)


async def keep_bounded(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    retention: Retention,
    ahead_days: int,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """A pass now and every `interval_s` until stopped; a failed pass is logged and tried again then
    (readings keep being stored meanwhile: the default partition takes what no partition covers)."""
    while not stop.is_set():
        try:
            conn = await connect()
            try:
                done = await maintain(conn, retention, ahead_days, datetime.now(UTC))
            finally:
                await conn.close()
        except postgres.OUTAGE as exc:
            log.warning("history: the pass failed, trying again in %.0f s: %s", interval_s, exc)
        else:
            log.info(
                "history: made %s (moved %d readings into them), dropped %s, deleted %s, emptied the "
                "packed days' raw partitions %s in %.3f s",
                done.made or "no partitions", done.moved, done.dropped or "no partitions",
                done.deleted, done.reclaimed or "none", done.seconds,
            )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
