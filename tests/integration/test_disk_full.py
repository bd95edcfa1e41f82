"""PostgreSQL's disk full under load: the saver stops writing (every round fails with disk_full,
53100, and is read again, never dead-lettered), its health says NOT_SERVING once it has been stuck
for its stall_after_s, ingest goes on (Kafka holds the readings), and once there is room again it
catches up: every acknowledged reading stored once, events, alarms and counters the model's
(tests/faults.py).

The disk that fills is a small tmpfs, made a tablespace, that the partition the load writes into is
moved to (as root; the partition goes back afterwards): PostgreSQL meets the same "No space left on
device" extending a table there as on a full disk (the WAL stays on the stack's disk)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2

from saver import partitions
from stack import access, probes
from stack import settings as stack_settings
from tests.disks import fill, mount_tmpfs, unmount
from tests.faults import BASE_US, Load, during_load
from tests.helpers import eventually
from tests.target import Target

pytestmark = pytest.mark.local_stack

SETTINGS = stack_settings.load()
TABLESPACE = "metrics_test_full_disk"
# Room the tablespace has beside the partition: filled up by the test.
SPARE_MB = 64


@pytest.fixture
async def partition_on_a_small_disk() -> AsyncIterator[Path]:
    """The load's day partition of raw readings moved to a tmpfs with SPARE_MB to spare; yields the
    tmpfs's folder. Afterwards the partition is back on the stack's disk and the tmpfs gone."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root")
    day = datetime.fromtimestamp(BASE_US / 1e6, tz=UTC).date()
    partition = partitions.partition_name(day)
    folder = Path(f"/tmp/metrics-full-disk-{uuid.uuid4().hex[:8]}")
    conn = await access.postgres_superuser(SETTINGS, "metrics")
    try:
        size = await conn.fetchval("SELECT pg_relation_size($1::regclass)", partition)
        await asyncio.to_thread(mount_tmpfs, folder, size // 2**20 + SPARE_MB, "postgres")
        try:
            await conn.execute(f"CREATE TABLESPACE {TABLESPACE} LOCATION '{folder}'")
            try:
                await conn.execute(f"ALTER TABLE {partition} SET TABLESPACE {TABLESPACE}")
                try:
                    yield folder
                finally:
                    await conn.execute(f"ALTER TABLE {partition} SET TABLESPACE pg_default")
            finally:
                await conn.execute(f"DROP TABLESPACE {TABLESPACE}")
        finally:
            await asyncio.to_thread(unmount, folder)
    finally:
        await conn.close()


async def saver_health() -> str:
    (instance,) = SETTINGS.instances("saver")
    try:
        await probes.grpc_health(f"127.0.0.1:{instance.grpc_port}")
    except RuntimeError as error:  # its answer was not SERVING
        return str(error)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(health_pb2.HealthCheckResponse.SERVING)


async def test_postgres_disk_full_the_saver_waits_and_catches_up(
    partition_on_a_small_disk: Path, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    finished = asyncio.Event()
    load = Load(batches=5_000, until=finished)
    seen: dict[str, object] = {}

    saver_log = SETTINGS.logs_dir / "saver.log"
    logged_before = saver_log.stat().st_size

    async def disk_full() -> None:
        filler = await asyncio.to_thread(fill, partition_on_a_small_disk)
        try:
            acked = load.acked

            async def stuck() -> None:
                assert await saver_health() == "health is NOT_SERVING"

            await eventually(stuck, timeout=90, what="the saver reporting NOT_SERVING")
            seen["batches acknowledged while full"] = load.acked - acked
            seen["readings stored when the saver said NOT_SERVING"] = await db.fetchval(
                "SELECT count(*) FROM readings WHERE sensor_id LIKE $1", f"{load.prefix}%"
            )
        finally:
            filler.unlink()

        async def serving() -> None:
            assert await saver_health() == "SERVING"

        await eventually(serving, timeout=90, what="the saver serving again")
        finished.set()

    await during_load(target, db, redis_client, disk_full, load)
    print(f"PostgreSQL's disk full: {seen}; {load.acked} batches acknowledged in all")
    assert seen["batches acknowledged while full"], "ingest stopped while PostgreSQL's disk was full"
    logged = saver_log.read_bytes()[logged_before:].decode(errors="replace")
    assert "DiskFullError: could not extend file" in logged, "the saver did not meet the full disk"
