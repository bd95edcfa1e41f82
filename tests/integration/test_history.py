"""History that stays bounded: the move to readings by series on a populated database, partitions
made ahead, retention per metric type (saver/history.py)."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from runtime import postgres
from runtime.migrations import OWNERS, migrate
from saver import history, partitions, series_move, store
from saver.retention import retention
from stack import access, credentials
from stack import settings as stack_settings
from testkit.http import http
from tests.helpers import rfc3339, send
from tests.integration.conftest import Connect
from tests.target import Target

pytestmark = pytest.mark.local_stack  # a database of their own: the stack's superuser makes it

DAY_US = 86_400_000_000
TYPES = ("temperature", "humidity", "vibration", "energy")
# The saver's migrations before readings were stored by series.
BEFORE_SERIES = 9
MIGRATIONS = OWNERS["saver"]
# What a migration or a retention pass must leave as it was, as digests: the rollups and events
# (of the sensors given), the readings.
KEPT = """
SELECT (SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) FROM rollups_minute r WHERE {where}),
       (SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) FROM rollups_hour r WHERE {where}),
       (SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) FROM histogram_hour r WHERE {where}),
       (SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) FROM events r WHERE {where})
"""
READINGS = """
SELECT count(*), md5(string_agg(r::text, ',' ORDER BY r::text)) FROM (
    SELECT sensor_id, metric_type, reading_time, value, nullif(unit, '') AS unit,
           nullif(labels, '{{}}') AS labels
    FROM readings
) r WHERE {where}
"""
OLD = "sensor_id LIKE 's-%'"
PER_TYPE = """
SELECT metric_type, count(*) AS count, min(reading_time) AS first FROM readings GROUP BY 1 ORDER BY 1
"""
PART_OF = """
SELECT r.tableoid::regclass::text FROM readings_raw r JOIN series s USING (series_id)
WHERE s.sensor_id = $1 AND r.reading_time = $2
"""


def readings(sensors: int, start_us: int, days: int, per_day: int) -> list[store.ReadingRow]:
    """Every type of every sensor, `per_day` readings a day from `start_us`."""
    step = DAY_US // per_day
    return [
        (f"s-{s}", metric_type, start_us + i * step + s, float(i % 97), "u", None)
        for s in range(sensors)
        for metric_type in TYPES
        for i in range(days * per_day)
    ]


def events(start_us: int, count: int) -> list[store.EventRow]:
    return [
        (
            f"{i:032x}",
            1,
            "s-0",
            "temperature",
            99.0,
            start_us + i * DAY_US,
            95.0,
            3,
            start_us,
            "",
            0,
            "",
            None,
        )
        for i in range(count)
    ]


async def test_readings_move_to_series_whole_and_once_and_ingest_goes_on_after(
    scratch_connect: Connect, tmp_path: Path
) -> None:
    owner = await scratch_connect(server_settings=postgres.SERVER_SETTINGS)
    await migrate(owner, "saver", first_migrations(tmp_path, BEFORE_SERIES))
    now_us = time.time_ns() // 1000
    # Four months of four metric types of five sensors, 24 readings a day each (57,600), as the
    # saver stored them before series: in readings_legacy, the day partitions and the default one.
    old = readings(5, now_us - 120 * DAY_US, 120, 24)
    old += [("s-0", "temperature", now_us + 20 * 365 * DAY_US, 1.0, "", "{}")]  # a clock 20 years ahead
    old += [("s-1", "humidity", now_us - 3 * DAY_US, 2.0, "%", '{"site": "plant \\\\7"}')]
    # A day partition, as the saver made them then: the first day after readings_legacy.
    first_day = await owner.fetchval("SELECT partitioned_from FROM readings_partitioning")
    await owner.execute(
        f"CREATE TABLE readings_p1 PARTITION OF readings FOR VALUES FROM ('{first_day.isoformat()}') "
        f"TO ('{(first_day + timedelta(days=1)).isoformat()}')"
    )
    old += [("s-2", "vibration", int(first_day.timestamp()) * 1_000_000 + 1000, 3.0, None, None)]
    micros = await scratch_connect(server_settings=postgres.SERVER_SETTINGS)
    await postgres.setup_connection(micros)  # times as µs
    await micros.copy_records_to_table("readings", records=old)
    await micros.close()
    old_parts = await owner.fetch(
        "SELECT tableoid::regclass::text AS part, count(*) FROM readings GROUP BY 1"
    )
    assert len(old_parts) >= 3, old_parts
    # Compared as the move stores them: an empty unit or labels as none.
    before = await owner.fetchrow(READINGS.format(where=OLD))
    assert before["count"] == len(old)

    await migrate(owner, "saver")
    assert await owner.fetchrow(READINGS.format(where=OLD)) == before, "all there while not yet moved"
    # A move stopped after one partition (a transaction each) goes on from there.
    await series_move._move_partition(owner, old_parts[0]["part"])
    assert await owner.fetchrow(READINGS.format(where=OLD)) == before
    began = time.perf_counter()
    moved = await series_move.finish(owner)
    print(f"\nmoved {moved:,} readings to series in {time.perf_counter() - began:.3f} s")
    assert moved == len(old) - old_parts[0]["count"]
    assert await series_move.finish(owner) == 0, "nothing left: a second start moves nothing"
    assert await owner.fetchval("SELECT to_regclass('readings_rows')") is None
    assert await owner.fetchrow(READINGS.format(where=OLD)) == before
    # An empty unit and labels are stored as none, as the saver stores them.
    ahead = await owner.fetchrow(
        "SELECT unit, labels FROM readings WHERE reading_time > now() + interval '1 year'"
    )
    assert (ahead["unit"], ahead["labels"]) == (None, None)
    labels = await owner.fetchval("SELECT labels FROM readings WHERE sensor_id = 's-1' AND unit = '%'")
    assert labels == '{"site": "plant \\\\7"}'

    # After: the saver's write path stores a reading of any time, in its day's partition or the
    # default one, and the view and the assessor's function read readings_raw alone.
    conn = await scratch_connect(server_settings=postgres.SERVER_SETTINGS)
    await store.setup_connection(conn)
    today = datetime.now(UTC)
    await history.maintain(owner, retention(90, (), 1095, 1095), 7, today)
    places = {
        now_us + 3 * DAY_US: partitions.partition_name((today + timedelta(days=3)).date()),
        now_us - 30 * DAY_US: partitions.partition_name((today - timedelta(days=30)).date()),
        946_684_800_000_001: partitions.DEFAULT,  # 2000-01-01, the receiver's earliest
        now_us + 20 * 365 * DAY_US: partitions.DEFAULT,
    }
    assert await store.write(conn, [("after", "t", at, 1.0, None, None) for at in places], []) == (4, 0)
    assert {at: await conn.fetchval(PART_OF, "after", at) for at in places} == places
    assert await conn.fetchval("SELECT count(*) FROM series_readings('after', 't')") == 4
    await conn.close()
    await owner.close()


async def test_retention_deletes_exactly_the_expired_readings_of_each_type(scratch_connect: Connect) -> None:
    owner = await scratch_connect(server_settings=postgres.SERVER_SETTINGS)
    conn = await writer_after(scratch_connect, owner)
    start = datetime.combine(datetime.now(UTC).date() - timedelta(days=61), datetime.min.time(), UTC)
    start_us = int(start.timestamp()) * 1_000_000
    now = start + timedelta(days=60, hours=12)  # the passes' clock: 60 days after the first pass
    await history.maintain(owner, retention(90, (), 1095, 1095), 7, start)
    await history.maintain(owner, retention(90, (), 1095, 1095), 7, now)

    # 70 days of readings (from 10 days before the first pass), two sensors, four types.
    rows = readings(2, start_us - 10 * DAY_US, 70, 24)
    await write_in_batches(conn, rows)
    await store.write(conn, [], events(start_us - 10 * DAY_US, 70))
    kept_before = await owner.fetchrow(KEPT.format(where="true"))

    # temperature and humidity 30 days, vibration 7, energy 45: the longest decides the partitions.
    kept = retention(30, ("vibration:7", "energy:45"), 1095, 1095)
    done = await history.maintain(owner, kept, 7, now)
    print(f"\nretention pass over {len(rows):,} readings: {done.seconds:.3f} s, {done}")
    cutoffs = {t: start + timedelta(days=d) for t, d in (("temperature", 30), ("humidity", 30),
                                                        ("vibration", 53), ("energy", 15))}  # fmt: skip
    cutoffs_us = {t: int(c.timestamp()) * 1_000_000 for t, c in cutoffs.items()}
    expected = {t: sum(1 for r in rows if r[1] == t and r[2] >= cutoffs_us[t]) for t in TYPES}
    assert {r["metric_type"]: r["count"] for r in await conn.fetch(PER_TYPE)} == expected
    assert all(r["first"] >= cutoffs_us[r["metric_type"]] for r in await conn.fetch(PER_TYPE))
    # Partitions were made back to the oldest day kept (those before `now` - 90 days are gone already).
    assert done.dropped == [
        partitions.partition_name((start + timedelta(days=n)).date()) for n in range(-30, 15)
    ]
    assert await owner.fetchrow(KEPT.format(where="true")) == kept_before, "rollups and events untouched"
    horizons = await owner.fetch(
        "SELECT metric_type, kept_from FROM history_horizons WHERE kind = 'readings'"
    )
    assert {r["metric_type"]: r["kept_from"] for r in horizons} == {
        "": cutoffs["temperature"], "vibration": cutoffs["vibration"], "energy": cutoffs["energy"]
    }  # fmt: skip

    # Done for the day: a second pass deletes nothing. A reading from long ago is stored (in the
    # default partition), counted in the rollups, and expires.
    again = await history.maintain(owner, kept, 7, now)
    assert (again.dropped, again.made, again.deleted) == ([], [], {"readings:default partition": 0})
    old = start_us - 3000 * DAY_US
    assert await store.write(conn, [("s-0", "temperature", old, 5.0, None, None)], []) == (1, 0)
    assert await conn.fetchval(PART_OF, "s-0", old) == partitions.DEFAULT
    assert (await history.maintain(owner, kept, 7, now)).deleted == {"readings:default partition": 1}
    minute = """
    SELECT count FROM rollups_minute WHERE sensor_id = 's-0' AND minute = date_trunc('minute', $1::timestamptz, 'UTC')
    """
    assert await conn.fetchval(minute, old) == 1
    await conn.close()
    await owner.close()


async def writer_after(
    connect: Connect, owner: asyncpg.Connection, migrations: Path = MIGRATIONS
) -> asyncpg.Connection:
    """Migrates, then opens a connection set up as the saver's writers are (times as microseconds,
    staging tables)."""
    await migrate(owner, "saver", migrations)
    conn = await connect(server_settings=postgres.SERVER_SETTINGS)
    await store.setup_connection(conn)
    return conn


async def write_in_batches(conn: asyncpg.Connection, rows: list[store.ReadingRow]) -> None:
    for i in range(0, len(rows), 10_000):
        await store.write(conn, rows[i : i + 10_000], [])


def first_migrations(tmp_path: Path, count: int) -> Path:
    for path in sorted(MIGRATIONS.glob("*.sql"))[:count]:
        shutil.copy(path, tmp_path)
    return tmp_path


async def test_queries_say_from_when_raw_readings_are_kept(target: Target, sensor_id: str) -> None:
    # A metric type whose raw readings before an hour ago have expired, as the saver's retention
    # records it: statistics and listings over a range reaching before that say so; later ranges don't.
    metric_type = f"expiring_{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    kept_from = now - 3600
    owner = await access.postgres(stack_settings.load(), credentials.POSTGRES_OWNER)
    await owner.execute(
        "INSERT INTO history_horizons (kind, metric_type, kept_from) VALUES ('readings', $1, to_timestamp($2))",
        metric_type, kept_from,
    )  # fmt: skip
    try:
        await send(target.envoy_url, sensor_id, metric_type, 1.0, 2.0, start=now - 60)
        queries = {
            "stats": f"/v1/sensors/{sensor_id}/stats?metricType={metric_type}",
            "readings": f"/v1/sensors/{sensor_id}/readings?metricType={metric_type}",
        }
        for name, query in queries.items():
            for start, expected in ((now - 7200, rfc3339(kept_from)), (now - 1800, None)):
                url = f"{target.envoy_url}{query}&startTime={rfc3339(start)}&endTime={rfc3339(now + 60)}"
                status, body = await http("GET", url)
                assert status == 200, body
                answer = body["stats"] if name == "stats" else body
                assert answer.get("rawStartTime") == (expected and expected.replace(".000000Z", "Z")), (
                    name,
                    start,
                )
    finally:
        await owner.execute("DELETE FROM history_horizons WHERE metric_type = $1", metric_type)
        await owner.close()
