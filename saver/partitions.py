"""The readings' day partitions (saver/migrations/0010): names, bounds, making and dropping them.

`readings_raw` is partitioned by reading_time: readings_raw_pYYYYMMDD holds one UTC day,
readings_raw_default whatever no other partition covers.
Every change here takes a lock that blocks inserts into `readings` only for as long as it takes to
change the catalog; LOCK_TIMEOUT bounds the wait for it (a change that cannot get it in time fails
and is tried again at the next run, rather than queueing every insert behind a long transaction).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import asyncpg

PARENT = "readings_raw"
DEFAULT = "readings_raw_default"
LOCK_TIMEOUT = "2s"
NAME = re.compile(r"readings_raw_p(\d{8})")

PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings_raw'::regclass AND c.relkind = 'r'
"""


def partition_name(day: date) -> str:
    return f"readings_raw_p{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day a partition named by partition_name holds; None for the other partitions."""
    match = NAME.fullmatch(name)
    if match is None:
        return None
    return datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def days_to_make(first: date, last: date, made: set[date]) -> list[date]:
    """The days in [first, last] without a partition."""
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [day for day in days if day not in made]


async def existing(conn: asyncpg.Connection) -> set[date]:
    """The days that have a partition."""
    names = [r["relname"] for r in await conn.fetch(PARTITIONS)]
    return {d for name in names if (d := partition_day(name)) is not None}


async def make(conn: asyncpg.Connection, day: date) -> int:
    """Makes `day`'s partition, moving into it any of its readings stored meanwhile in the default
    partition (the saver did not run for a while); returns how many it moved."""
    name = partition_name(day)
    start, end = day_bounds(day)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # CREATE TABLE … PARTITION OF would lock out inserts while it checks the default partition;
        # ATTACH PARTITION lets them go on.
        await conn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)")
        moved = await conn.execute(
            f"""
            WITH moved AS (
                DELETE FROM {DEFAULT} WHERE reading_time >= $1 AND reading_time < $2 RETURNING *
            )
            INSERT INTO {name} SELECT * FROM moved
            """,  # noqa: S608 - names made here
            start, end,
        )  # fmt: skip
        await conn.execute(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{start.isoformat()}') "
            f"TO ('{end.isoformat()}')"
        )
    return int(moved.rsplit(" ", 1)[1])


async def drop(conn: asyncpg.Connection, name: str) -> None:
    """Drops a partition with all its readings. (DETACH … CONCURRENTLY would not block inserts at all,
    but PostgreSQL refuses it while there is a default partition.)"""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE {name}")
