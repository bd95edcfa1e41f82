"""Compaction (saver/compaction.py) on a database of the test's own: packed hours read back exactly
as stored, a resend into them changes nothing, late readings are packed again, and a pass stopped
midway leaves every reading once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from assessor import readings
from runtime import postgres
from runtime.migrations import migrate
from saver import compaction, partitions, store
from tests.helpers import eventually, past_us
from tests.integration.conftest import Connect

pytestmark = pytest.mark.local_stack  # a database of their own: the stack's superuser makes it

HOUR_US = 3_600_000_000
START_US = past_us(0) - 24 * HOUR_US  # three days ago, midnight
NOW_US = START_US + 48 * HOUR_US  # the passes' clock: every hour of the readings closed
ROLLUPS = """
SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) FROM (
    SELECT * FROM rollups_minute UNION ALL SELECT * FROM rollups_hour
) r
"""
UNITS = [None, "celsius", "celsius", "%"]
LABELS = [None, '{"site":"plant-7"}', None, '{"a":"b","k":"v \\\\ \\"q\\""}']


def generate(seed: int, sensors: int, hours: int) -> list[store.ReadingRow]:
    """Readings of two types of each sensor at irregular times (some a µs apart), with extremes and
    -0.0 among two-decimal values, units and labels that change now and then."""
    rng = random.Random(seed)
    rows = []
    for s in range(sensors):
        for metric_type in ("temperature", "vibration"):
            t = START_US + rng.randrange(HOUR_US)
            while t < START_US + hours * HOUR_US:
                value = rng.choice(
                    [round(rng.uniform(-50, 150), 2)] * 6 + [-0.0, 1e150, -1e150, 5e-324, rng.random()]
                )
                attributes = rng.choice([0, 1, 1, 1, 1, 2, 3]) if rng.random() < 0.1 else 1
                rows.append((f"s-{s}", metric_type, t, value, UNITS[attributes], LABELS[attributes]))
                t += rng.choice([1, 1_000_000, 1_000_000, 1_000_000, 60_000_000, 7_000])
    return rows


def model(
    rows: list[store.ReadingRow],
) -> dict[tuple[str, str], list[tuple[int, int, str | None, str | None]]]:
    """Per series, in time order: (time, the value's bits, unit, labels as jsonb prints them); the first
    of a time kept, as storing does."""
    series: dict[tuple[str, str], dict[int, tuple[int, int, str | None, str | None]]] = {}
    for sensor, metric_type, t, value, unit, labels in rows:
        bits = int(np.float64(value).view(np.uint64))
        printed = None if labels is None else labels.replace('":"', '": "').replace('","', '", "')
        series.setdefault((sensor, metric_type), {}).setdefault(t, (t, bits, unit, printed))
    return {key: [found[t] for t in sorted(found)] for key, found in series.items()}


async def read_back(
    conn: asyncpg.Connection, key: tuple[str, str], start: int, end: int, limit: int | None = None,
    newest_first: bool = False,
) -> list[tuple[int, int, str | None, str | None]]:  # fmt: skip
    found = await readings.window(conn, *key, start, end, limit, newest_first=newest_first)
    bits = found.values.view(np.uint64).tolist()
    return list(zip(found.times.tolist(), bits, found.units, found.labels, strict=True))


async def database(connect: Connect) -> asyncpg.Connection:
    conn = await connect(server_settings=postgres.SERVER_SETTINGS)
    await migrate(conn, "saver")
    await store.setup_connection(conn)
    await compaction.setup_connection(conn)
    return conn


async def write(conn: asyncpg.Connection, rows: list[store.ReadingRow]) -> int:
    new = 0
    for i in range(0, len(rows), 5_000):
        new += (await store.write(conn, rows[i : i + 5_000], []))[0]
    return new


def slices(expected: list[tuple[int, int, str | None, str | None]]) -> Iterator[tuple[int, int, int | None]]:
    """Ranges that cut hours anywhere, with and without limits."""
    rng = random.Random(len(expected))
    for _ in range(12):
        a, b = sorted(rng.choice(expected)[0] + rng.randrange(-5, 5) for _ in range(2))
        yield a, b + 1, rng.choice([None, 1, 7, 500])


# Chunks of readings per transaction: as configured (every series of an hour in one), and so few
# that each series' hour is packed in slices of time merged into its row.
CHUNKS = pytest.mark.parametrize("chunk", [compaction.CHUNK_READINGS, 100], ids=["whole-hours", "slices"])


@CHUNKS
async def test_packed_hours_read_back_exactly_as_stored(
    scratch_connect: Connect, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(compaction, "CHUNK_READINGS", chunk)
    conn = await database(scratch_connect)
    owner = await scratch_connect()  # times as datetimes, as the history's upkeep has them
    day = datetime.fromtimestamp(START_US / 1e6, UTC).date()
    for n in range(2):
        await partitions.make(owner, day + timedelta(days=n))
    rows = generate(1, sensors=4, hours=5)
    expected = model(rows)
    assert await write(conn, rows) == sum(len(v) for v in expected.values())
    rollups = await conn.fetchval(ROLLUPS)

    done = await compaction.compact(conn, 0, NOW_US)
    print(f"\ncompacted {done.readings:,} readings into {done.rows} rows: {done.cpu_s / done.readings * 1e6:.2f} µs "
          "of CPU a reading in this process")  # fmt: skip
    assert done.readings == sum(len(v) for v in expected.values())
    assert done.rows == len({(key, r[0] // HOUR_US) for key, series in expected.items() for r in series})
    assert await conn.fetchval("SELECT count(*) FROM readings_raw") == 0
    assert await conn.fetchval("SELECT sum(count) FROM readings_packed") == done.readings
    assert await conn.fetchval(ROLLUPS) == rollups, "rollups untouched"
    for key, series in expected.items():
        assert await read_back(conn, key, START_US, NOW_US) == series, key
        assert await read_back(conn, key, START_US, NOW_US, 3, newest_first=True) == series[::-1][:3]
        for a, b, limit in slices(series):
            inside = [r for r in series if a <= r[0] < b]
            assert await read_back(conn, key, a, b, limit) == inside[:limit], (key, a, b, limit)
            assert await read_back(conn, key, a, b, limit, True) == inside[::-1][:limit], (key, a, b, limit)
    assert (await compaction.compact(conn, 0, NOW_US)).readings == 0, "nothing left"

    # The packed day's raw partition, its rows deleted but not its pages, is emptied; a late reading
    # lands in it again and keeps it from being emptied until packed.
    size = f"SELECT pg_total_relation_size('{partitions.partition_name(day)}')"
    before = await conn.fetchval(size)
    assert await partitions.reclaim(owner, day + timedelta(days=1), 0) == [partitions.partition_name(day)]
    assert await conn.fetchval(size) < before
    await write(conn, [("s-0", "temperature", START_US + 5, 1.0, None, None)])
    assert await partitions.reclaim(owner, day + timedelta(days=1), 0) == []
    with_late = model([*rows, ("s-0", "temperature", START_US + 5, 1.0, None, None)])
    for key in expected:
        assert await read_back(conn, key, START_US, NOW_US) == with_late[key], key
    await owner.close()
    await conn.close()


async def test_a_resend_into_packed_hours_changes_nothing_and_late_readings_are_packed_again(
    scratch_connect: Connect,
) -> None:
    conn = await database(scratch_connect)
    rows = generate(2, sensors=3, hours=3)
    await write(conn, rows)
    await compaction.compact(conn, 0, NOW_US)
    rollups = await conn.fetchval(ROLLUPS)

    assert await write(conn, rows[::3]) == 0, "a resend of packed readings is not stored again"
    assert await conn.fetchval(ROLLUPS) == rollups, "nor counted"
    assert await conn.fetchval("SELECT count(*) FROM readings_raw") == 0

    # Late readings into the packed hours, with resends among them: stored raw, found by queries,
    # counted once, queued, and packed again by the next pass.
    late = [(s, m, t + 3, 42.25, "celsius", None) for s, m, t, *_ in rows[1::50]]
    new = {r[:3] for r in late} - {r[:3] for r in rows}
    assert await write(conn, late + rows[::97]) == len(new)
    expected = model(rows + late)
    for key, series in expected.items():
        assert await read_back(conn, key, START_US, NOW_US) == series, key
    assert await conn.fetchval("SELECT count(*) FROM compaction_queue") > 0
    minute = "SELECT sum(count) FROM rollups_minute"
    assert await conn.fetchval(minute) == sum(len(v) for v in expected.values())

    done = await compaction.compact(conn, 0, NOW_US)
    assert done.readings == len(new)
    assert await conn.fetchval("SELECT count(*) FROM readings_raw") == 0
    assert await conn.fetchval("SELECT count(*) FROM compaction_queue") == 0
    for key, series in expected.items():
        assert await read_back(conn, key, START_US, NOW_US) == series, key
    await conn.close()


@pytest.mark.parametrize("chunk", [700, 100], ids=["two-series", "slices"])
async def test_a_pass_stopped_midway_leaves_every_reading_once(
    scratch_connect: Connect, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    conn = await database(scratch_connect)
    watcher = await scratch_connect()
    rows = generate(3, sensors=20, hours=2)  # ~340 readings a series and hour
    expected = model(rows)
    await write(conn, rows)
    monkeypatch.setattr(compaction, "CHUNK_READINGS", chunk)  # a transaction per two series, or less

    async def some_packed() -> None:
        assert await watcher.fetchval("SELECT count(*) FROM readings_packed") >= 4

    passing = asyncio.create_task(compaction.compact(conn, 0, NOW_US))
    await eventually(some_packed, timeout=30, what="a pass stopped after a few chunks")
    passing.cancel()
    # Cancelled in the middle of a COPY, asyncpg may fail the rollback instead of passing the
    # cancellation on ("cannot switch to state 15"): the pass ended unfinished either way.
    with pytest.raises((asyncio.CancelledError, asyncpg.InternalClientError)):
        await passing
    # A cancelled query leaves the connection unusable: dropped without a goodbye, as by kill -9 (a
    # close() may wait on the server's answer to the cancelled COPY).
    conn.terminate()

    conn = await database(scratch_connect)
    raw, packed_rows = (
        await conn.fetchval("SELECT count(*) FROM readings_raw"),
        await conn.fetchval("SELECT count(*) FROM readings_packed"),
    )
    assert raw and packed_rows, "stopped midway"
    for key, series in expected.items():
        assert await read_back(conn, key, START_US, NOW_US) == series, key
    done = await compaction.compact(conn, 0, NOW_US)
    assert done.readings == raw
    assert await conn.fetchval("SELECT count(*) FROM readings_raw") == 0
    for key, series in expected.items():
        assert await read_back(conn, key, START_US, NOW_US) == series, key
    await watcher.close()
    await conn.close()
