"""The readings' day partitions (saver/migrations/0010, 0011): names, bounds, making and dropping them.

`readings_raw` is partitioned by reading_time: readings_raw_pYYYYMMDD holds one UTC day,
readings_raw_default whatever no other partition covers. `readings_packed` is partitioned alike by
the hour its rows pack (readings_packed_pYYYYMMDD, readings_packed_default): a day's partitions of
both are made and dropped together, and named here by the raw one's name.
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
# Each partitioned table of readings, and the column of its time.
TABLES = {"readings_raw": "reading_time", "readings_packed": "hour"}
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
    """Makes `day`'s partitions, moving into them any of its readings stored meanwhile in the default
    partitions (the saver did not run for a while); returns how many raw readings it moved."""
    start, end = day_bounds(day)
    moved = 0
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        for parent, column in TABLES.items():
            name, default = f"{parent}_p{day:%Y%m%d}", f"{parent}_default"
            # CREATE TABLE … PARTITION OF would lock out inserts while it checks the default partition;
            # ATTACH PARTITION lets them go on.
            await conn.execute(f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING STORAGE)")
            status = await conn.execute(
                f"""
                WITH moved AS (
                    DELETE FROM {default} WHERE {column} >= $1 AND {column} < $2 RETURNING *
                )
                INSERT INTO {name} SELECT * FROM moved
                """,  # noqa: S608 - names made here
                start, end,
            )  # fmt: skip
            if parent == PARENT:
                moved = int(status.rsplit(" ", 1)[1])
            await conn.execute(
                f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM ('{start.isoformat()}') "
                f"TO ('{end.isoformat()}')"
            )
    return moved


async def drop(conn: asyncpg.Connection, day: date) -> None:
    """Drops a day's partitions with all their readings. (DETACH … CONCURRENTLY would not block
    inserts at all, but PostgreSQL refuses it while there is a default partition.)"""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        for parent in TABLES:
            await conn.execute(f"DROP TABLE IF EXISTS {parent}_p{day:%Y%m%d}")


# A day's raw partition once compaction has packed all of it: its rows are gone but not its pages
# (the heap until a vacuum, the key's index until the partition is dropped). Emptied by TRUNCATE
# under a lock that keeps writes out, only if it is still empty then; late readings of the day
# land in it again, and are packed again.
RECLAIMABLE = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings_raw'::regclass AND c.relname ~ '^readings_raw_p[0-9]{8}$'
  AND pg_total_relation_size(c.oid) > $1
"""
MIN_RECLAIM_BYTES = 1 << 20


async def reclaim(
    conn: asyncpg.Connection, compacted_before: date, min_bytes: int = MIN_RECLAIM_BYTES
) -> list[str]:
    """Empties the raw partitions of the days before `compacted_before` that hold no reading any
    more (and take `min_bytes` or more); returns their names. `conn`: the owner of the tables."""
    emptied = []
    for row in await conn.fetch(RECLAIMABLE, min_bytes):
        day = partition_day(row["relname"])
        if day is None or day >= compacted_before:
            continue
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.execute(f"LOCK TABLE {row['relname']} IN ACCESS EXCLUSIVE MODE")
            if await conn.fetchval(f"SELECT NOT EXISTS (SELECT 1 FROM {row['relname']})"):  # noqa: S608
                await conn.execute(f"TRUNCATE {row['relname']}")
                emptied.append(row["relname"])
    return emptied
