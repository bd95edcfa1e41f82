"""Backup and restore (stack/backup.py, docs/operations.md#backup-and-restore): a base backup, more
load, the database dropped, a restore to a point in time between the loads; then the saver's replay
of Kafka brings back what came after that time, each reading and event once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import postgres
from stack import access, backup, credentials
from stack import settings as stack_settings
from tests.helpers import eventually, wait_consumed
from tests.target import Target

pytestmark = pytest.mark.local_stack

# Readings a second apart, from an hour ago; four in every ten above any temperature threshold the
# stack's rules have, so that the processor makes events of them (the third warning in a row).
BASE_US = (time.time_ns() // 1000 // 1_000_000 - 3600) * 1_000_000


def readings(sensor: str, first: int, count: int) -> receiver_service_pb2.PushMetricsRequest:
    metrics = []
    for i in range(first, first + count):
        metric = metric_pb2.Metric(
            sensor_id=sensor, metric_type="temperature", value=200.0 if i % 10 < 4 else 20.0
        )
        metric.reading_time.FromMicroseconds(BASE_US + i * 1_000_000)
        metrics.append(metric)
    return receiver_service_pb2.PushMetricsRequest(metrics=metrics)


async def stored(sensor: str) -> tuple[list[tuple[int, float]], list[tuple[str, int, str]]]:
    """The sensor's readings (time, value) and events (id, reading time, kind), in order."""
    settings = stack_settings.load()
    conn = await access.postgres(
        settings, credentials.POSTGRES_READER, server_settings=postgres.SERVER_SETTINGS
    )
    try:
        await postgres.setup_connection(conn)
        rows = await conn.fetch(
            "SELECT reading_time, value FROM readings WHERE sensor_id = $1 ORDER BY reading_time", sensor
        )
        events = await conn.fetch(
            "SELECT event_id::text, reading_time, kind FROM events WHERE sensor_id = $1 ORDER BY event_id",
            sensor,
        )
    finally:
        await conn.close()
    return [(r["reading_time"], r["value"]) for r in rows], [tuple(e) for e in events]


async def test_a_point_in_time_restore_and_the_replay_leave_every_reading_and_event_once(
    receiver: ReceiverServiceStub, target: Target, sensor_id: str
) -> None:
    settings = stack_settings.load()

    async def until_stored(count: int) -> tuple[list[tuple[int, float]], list[tuple[str, int, str]]]:
        async def check() -> tuple[list[tuple[int, float]], list[tuple[str, int, str]]]:
            found = await stored(sensor_id)
            assert len(found[0]) == count, len(found[0])
            return found

        await eventually(check, timeout=60, what=f"{count} readings stored")
        # Their events too: the processor has read the readings, and the saver the events.
        await wait_consumed(target.kafka_bootstrap_servers, target.processor_group, target.metrics_topic)
        await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.events_topic)
        return await check()

    await receiver.PushMetrics(readings(sensor_id, 0, 100), timeout=30)
    await until_stored(100)
    await asyncio.to_thread(backup.backup, settings, False)
    await receiver.PushMetrics(readings(sensor_id, 100, 100), timeout=30)
    await until_stored(200)
    # A restore reaches times after its backup's end, which pgBackRest keeps in whole seconds.
    stop = await asyncio.to_thread(backup.latest_backup_stop, settings)
    assert stop is not None

    async def after_the_backup() -> None:
        assert datetime.now(UTC) > stop + timedelta(seconds=1)

    await eventually(after_the_backup, what="a time after the backup's end")
    restore_to = datetime.now(UTC)
    await asyncio.sleep(0.01)  # the next commits are after that time
    await receiver.PushMetrics(readings(sensor_id, 200, 100), timeout=30)
    before_rows, before_events = await until_stored(300)
    assert before_events, "the readings made no events: the test would not see them restored"

    # Lost: the whole database.
    superuser = await access.postgres_superuser(settings)
    try:
        await superuser.execute("DROP DATABASE metrics WITH (FORCE)")
    finally:
        await superuser.close()

    began = time.monotonic()
    await asyncio.to_thread(backup.restore, settings, restore_to, 600.0)
    restored_in = time.monotonic() - began
    # Back to the point in time, then the replay: every reading and event once, as before.
    after_rows, after_events = await until_stored(300)
    assert after_rows == before_rows
    assert after_events == before_events
    print(f"restored and replayed in {restored_in:.0f} s (+ the replay's catch-up)")
