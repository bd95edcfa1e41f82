"""One function per figure of the benchmark; each returns numbers, none asserts anything."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from google.protobuf import duration_pb2, timestamp_pb2

from bench import processes
from metrics.v1 import (
    assessor_service_pb2,
    assessor_service_pb2_grpc,
    event_pb2,
    metric_pb2,
    receiver_service_pb2,
    receiver_service_pb2_grpc,
)
from runtime import kafka, postgres
from saver import admin as saver_admin
from simulator.fleet import Fleet
from simulator.load import Plan, Progress, Result, run
from stack import access, consumers, credentials, procfs, prune
from stack.settings import StackSettings
from testkit import reported
from testkit.http import http
from testkit.webhooks import webhook

Say = Callable[[str], None]


@dataclass
class Env:
    stack: StackSettings
    envoy: str
    say: Say
    progress: Progress
    # Every sensor of this run has an id starting with this, so its data can be removed afterwards.
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}-")
    fleets: int = 0

    @property
    def processor_metrics(self) -> list[str]:
        """Where every processor serves its metrics."""
        return [f"127.0.0.1:{i.metrics_port}" for i in self.stack.instances("processor")]

    def fleet(self, sensors: int, **options: Any) -> Fleet:
        """A new simulated fleet of this run."""
        self.fleets += 1
        return Fleet(sensors, namespace=self.prefix[:-1], run_id=f"f{self.fleets}", **options)


async def remove_data(env: Env) -> None:
    """Deletes what this run stored in PostgreSQL and Redis, so repeated runs do not fill the disk
    (Kafka's retention bounds the topics). The 30-day history sensor stays for the next run."""
    started = time.monotonic()
    # Vacuumed now, rather than under the next run's first measurement.
    removed = await prune.remove_sensors(env.stack, env.prefix, vacuum=True)
    env.say(
        f"removed this run's data ({env.prefix}*): {removed.rows['readings']:,} readings, "
        f"{removed.rows['events']:,} events, {removed.redis_keys:,} Redis keys in "
        f"{time.monotonic() - started:.1f} s"
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered))) - 1]


async def lag(env: Env, group: str, topic: str) -> int:
    """Records of `topic` that `group` has not committed yet."""
    return await consumers.lag(access.kafka(env.stack), group, topic)


async def wait_drained(
    env: Env, groups: tuple[str, ...] = ("processor", "saver"), timeout: float = 900
) -> float:
    """Waits until the groups have committed everything in the metrics topic; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        behind = [await lag(env, g, "metrics") for g in groups]
        if not any(behind):
            return time.monotonic()
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{groups} did not catch up within {timeout} s")


async def stored(env: Env, prefix: str) -> int:
    """Readings in PostgreSQL of the sensors whose ids start with `prefix`."""
    conn = await access.postgres(env.stack, credentials.POSTGRES_READER)
    try:
        return await saver_admin.stored_count(conn, prefix)
    finally:
        await conn.close()


# Readings per record (per client-stream message) of the large-batch figures.
BATCH = 500


@dataclass(frozen=True)
class EndToEnd:
    acked: int
    stored: int
    readings_per_s: float
    # The longest a stream waited for its answer (sent for up to a second, then answered): under
    # load past what the pipeline carries, a client still sees progress or a refusal within this.
    longest_wait_s: float


async def end_to_end(env: Env, seconds: float) -> EndToEnd:
    """500 sensors streaming batches of BATCH readings through Envoy as fast as they are accepted for
    `seconds`: readings stored per second from the first send until every one is stored."""
    # Readings without times (stamped on arrival), so that making the load costs little CPU.
    fleet = env.fleet(500, above=0.01, arrival_times=True)
    ingest = await receiver_ingest(env, fleet, BATCH, seconds)
    drained = await wait_drained(env)
    count = await stored(env, fleet.prefix)
    if count != ingest.acked:
        env.say(f"warning: {ingest.acked} readings acknowledged but {count} stored")
    longest = max(ingest.latencies_ms, default=0.0) / 1000
    return EndToEnd(ingest.acked, count, count / (drained - ingest.first_send), longest)


# --- receiver vs raw produce ---------------------------------------------------------------------


async def raw_produce(env: Env, fleet: Fleet, batch: int, seconds: float, replicas: int = 1) -> float:
    """Readings/s of producing the receiver's records (one MetricBatch per sensor batch) straight to
    Kafka with the receiver's client settings (acks=all), to a scratch topic of the same partition
    count with `replicas` replicas."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka.client_options(access.kafka(env.stack)))
    await admin.start()
    await admin.create_topics([NewTopic(topic, env.stack.metrics_partitions, replicas)])
    records = []
    for _ in range(200):
        metrics = fleet.batch(batch)
        records.append(
            (metrics[0].sensor_id.encode(), metric_pb2.MetricBatch(metrics=metrics).SerializeToString())
        )
    producer = kafka.make_producer(access.kafka(env.stack), "bench-raw")
    await producer.start()
    headers = kafka.headers(kafka.METRIC_BATCH_TYPE)
    sent = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            acks = [await producer.send(topic, value, key=key, headers=headers) for key, value in records]
            await asyncio.gather(*acks)
            sent += len(records) * batch
        return sent / (time.monotonic() - started)
    finally:
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()


async def receiver_ingest(env: Env, fleet: Fleet, batch: int, seconds: float, path: str = "stream") -> Result:
    plan = Plan(fleet, path=path, rate=0, duration_s=seconds, batch=batch, connections=4, target=env.envoy)
    return await run(plan, env.progress)


# --- saver vs raw COPY ---------------------------------------------------------------------------


async def saver_drain(env: Env, batch: int) -> tuple[float, float]:
    """Stored readings/s and CPU s per million of the saver working off a backlog of records of
    `batch` readings, timed from its first commit to its last (so its start-up is not counted)."""
    pid = processes.pids()["saver"]
    backlog = await lag(env, "saver", "metrics")
    if not backlog:
        raise RuntimeError("no backlog for the saver to work off")
    started, start_lag, cpu = None, backlog, 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        now_lag = await lag(env, "saver", "metrics")
        if started is None and now_lag < start_lag:
            started, start_lag, cpu = time.monotonic(), now_lag, procfs.cpu_seconds(pid)
        elif started is not None and now_lag == 0:
            readings = start_lag * batch
            return readings / (time.monotonic() - started), (procfs.cpu_seconds(pid) - cpu) / readings * 1e6
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the saver did not work off {backlog} records in 600 s")


async def raw_copy(env: Env, fleet: Fleet, rows_total: int, chunk: int) -> float:
    """Rows/s of a plain binary COPY of readings rows into readings_raw, `chunk` rows per transaction."""
    rows: list[saver_admin.ReadingRow] = []
    while len(rows) < rows_total:
        rows += saver_admin.reading_rows(fleet.batch(500))
    conn = await access.postgres(
        env.stack, credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
    )
    await postgres.setup_connection(conn)
    try:
        keyed = await saver_admin.keyed_rows(conn, rows)
        started = time.monotonic()
        for i in range(0, len(keyed), chunk):
            async with conn.transaction():
                await conn.copy_records_to_table("readings_raw", records=keyed[i : i + chunk])
        return len(rows) / (time.monotonic() - started)
    finally:
        await conn.close()


# --- alert latency -----------------------------------------------------------------------------


@dataclass
class Probes:
    """Sensors that each send three warnings, one per call, while a steady background load flows:
    when the third was acknowledged (`acked`) and when its event was first on `events` (`seen`)."""

    acked: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)

    def latencies(self, other: dict[str, float] | None = None) -> list[float]:
        """Milliseconds from each acknowledgement to its event (or to the times in `other`)."""
        until = self.seen if other is None else other
        return [(until[s] - self.acked[s]) * 1000 for s in self.acked if s in until]


async def probe_alerts(
    env: Env, scope: str, rate: float, seconds: float, probes_per_s: float,
    raised: Callable[[event_pb2.Event], bool], done: Callable[[Probes], bool] = lambda _: True,
) -> Probes:  # fmt: skip
    """Runs the probes (sensors `scope` + a number) under `rate` readings/s of background load for
    `seconds`, noting the first event of each probe for which `raised` holds; then waits up to 10 s
    for the events still missing (and for `done`)."""
    background = Plan(env.fleet(1000, above=0.0), path="stream", rate=rate, duration_s=seconds, batch=100,
                      connections=2, target=env.envoy)  # fmt: skip
    probes = Probes()
    consumer = AIOKafkaConsumer(**kafka.client_options(access.kafka(env.stack)), fetch_max_wait_ms=5)
    await consumer.start()
    admin = AIOKafkaAdminClient(**kafka.client_options(access.kafka(env.stack)))
    await admin.start()
    partitions = await consumers.topic_partitions(admin, "events")
    await admin.close()
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)

    async def tail() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    event = event_pb2.Event.FromString(record.value)
                    if raised(event):
                        probes.seen.setdefault(event.sensor_id, now)

    async def probe(stub: receiver_service_pb2_grpc.ReceiverServiceAsyncStub) -> None:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < seconds - 2:
            sensor = f"{scope}{i}"
            for _ in range(3):
                metric = metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=120.0)
                await stub.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=[metric]), timeout=10)
            probes.acked[sensor] = time.monotonic()
            i += 1
            await asyncio.sleep(1 / probes_per_s)

    tailer = asyncio.create_task(tail())
    try:
        async with grpc.aio.insecure_channel(env.envoy) as channel:
            stub = receiver_service_pb2_grpc.ReceiverServiceStub(channel)
            await asyncio.gather(run(background), probe(stub))
        deadline = time.monotonic() + 10
        while (set(probes.acked) - set(probes.seen) or not done(probes)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        tailer.cancel()
        await consumer.stop()
    if missing := set(probes.acked) - set(probes.seen):
        env.say(f"warning: {len(missing)} of {len(probes.acked)} probes raised nothing within 10 s")
    return probes


async def alert_latency(env: Env, rate: float, seconds: float, probes_per_s: float = 5) -> list[float]:
    """Milliseconds from the acknowledgement of a sensor's N-th warning to its event in Kafka, while
    a steady load of `rate` readings/s (no warnings) flows."""
    probes = await probe_alerts(env, f"{env.prefix}alert-", rate, seconds, probes_per_s, lambda _: True)
    return probes.latencies()


async def alarm_latency(
    env: Env, rate: float, seconds: float, probes_per_s: float = 5
) -> dict[str, list[float]]:
    """Milliseconds from the acknowledgement of a sensor's third warning to its alarm's raise on Kafka
    ("event") and to the webhook of a subscription to it ("webhook"), for a rule made at run time that
    is changed every 200 ms meanwhile (its threshold between two values the probes exceed), while a
    steady load of `rate` readings/s flows."""
    base = f"http://{env.envoy}"
    scope = f"{env.prefix}alarm-"
    status, rule = await http("POST", f"{base}/v1/rules", {
        "metricType": "temperature", "sensorIdPrefix": scope, "threshold": 100, "count": 3,
        "severity": "SEVERITY_MAJOR",
    })  # fmt: skip
    assert status == 200, rule
    await reported.rules_in_force(
        kafka.client_options(access.kafka(env.stack)), "rules", env.processor_metrics
    )
    changes = 0

    async def change_rule() -> None:
        nonlocal changes
        while True:
            await asyncio.sleep(0.2)
            threshold = 101 if changes % 2 == 0 else 100
            await http("PATCH", f"{base}/v1/rules/{rule['ruleId']}", {"threshold": threshold})
            changes += 1

    def raised(event: event_pb2.Event) -> bool:
        return event.rule_id == rule["ruleId"] and event.kind == event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED

    async with webhook() as hook:
        status, made = await http("POST", f"{base}/v1/subscriptions", {
            "url": hook.url("/alarms"), "secret": "bench-" + "s" * 26, "sensorIdPrefix": scope,
            "kinds": ["EVENT_KIND_THRESHOLD_EXCEEDED"],
        })  # fmt: skip
        assert status == 200, made
        changing = asyncio.create_task(change_rule())
        try:
            probes = await probe_alerts(
                env, scope, rate, seconds, probes_per_s, raised,
                done=lambda p: len(hook.on("/alarms")) >= len(p.acked),
            )  # fmt: skip
        finally:
            changing.cancel()
            await http("DELETE", f"{base}/v1/subscriptions/{made['subscription']['subscriptionId']}")
            await http("DELETE", f"{base}/v1/rules/{rule['ruleId']}")
        # The webhook's receive times are wall-clock; the acknowledgements monotonic: both as offsets.
        offset = time.time() - time.monotonic()
        delivered = {r.notification["event"]["sensorId"]: r.time - offset for r in hook.on("/alarms")}
    env.say(f"the rule changed {changes} times while {len(probes.acked)} alarms were raised")
    return {"event": probes.latencies(), "webhook": probes.latencies(delivered)}


# --- statistics query --------------------------------------------------------------------------

HISTORY_SENSOR = "bench-history-1hz"
# The start of today (UTC): the history is within the raw readings' retention.
HISTORY_END_US = (
    int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * 1_000_000
)


async def ensure_history(env: Env, days: int) -> None:
    """`days` days of 1 Hz readings for HISTORY_SENSOR ending at HISTORY_END_US, written through the
    saver's own write path (staging COPY, idempotent insert, rollups) unless already there."""
    start_us = HISTORY_END_US - days * 86_400_000_000
    conn = await access.postgres(
        env.stack, credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
    )
    try:
        await postgres.setup_connection(conn)  # times as µs
        have = await conn.fetchval(
            "SELECT coalesce(sum(count), 0) FROM rollups_hour WHERE sensor_id = $1 AND hour >= $2 AND hour < $3",
            HISTORY_SENSOR, start_us, HISTORY_END_US,
        )  # fmt: skip
        if have == days * 86_400:
            return
        env.say(f"loading {days} days of 1 Hz history for {HISTORY_SENSOR} ({days * 86_400:,} readings)")
        started = time.monotonic()
        chunk = 50_000
        for first in range(start_us, HISTORY_END_US, chunk * 1_000_000):
            rows: list[saver_admin.ReadingRow] = []
            for i in range(chunk):
                t = first + i * 1_000_000
                if t >= HISTORY_END_US:
                    break
                # A daily cycle with noise: realistic spread for percentiles.
                value = 20 + 8 * ((t // 1_000_000 % 86_400) / 86_400) + (t // 1_000_000 % 97) / 19
                rows.append((HISTORY_SENSOR, "temperature", t, round(value, 2), "celsius", None))
            await saver_admin.write_readings(conn, rows)
    finally:
        await conn.close()
    # What autovacuum would do a little later: statistics for the planner, the visibility map for
    # index-only scans. Only a table's owner may vacuum it; the writer's VACUUM is skipped.
    owner = await access.postgres(env.stack, credentials.POSTGRES_OWNER)
    try:
        await saver_admin.vacuum(owner, analyze=True)
    finally:
        await owner.close()
    env.say(f"loaded in {time.monotonic() - started:.0f} s")


STORAGE_PREFIX = "bench-storage-"
STORAGE_DAYS_AGO = 45  # a day of its own: before the history's 30, within the retention's 90


async def history_storage(env: Env, days: int) -> float:
    """Bytes per reading of the history sensor's days (heap, indexes, TOAST)."""
    first = datetime.fromtimestamp(HISTORY_END_US / 1e6, UTC).date() - timedelta(days=days)
    return await _bytes_per_reading(env, first, first + timedelta(days=days - 1))


async def fleet_storage(env: Env, sensors: int, seconds: int, *, fresh: bool) -> float:
    """Bytes per reading of a fleet-shaped sample: `sensors` sensors at 1 Hz for `seconds`, stored
    as a fleet's readings arrive (every sensor's reading of a second, then the next second), through
    the saver's write path, on a day that holds nothing else. `fresh`: stored again (raw), else as
    it is now (packed, once compacted)."""
    day = datetime.now(UTC).date() - timedelta(days=STORAGE_DAYS_AGO)
    start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
    if fresh:
        conn = await access.postgres(
            env.stack, credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
        )
        try:
            await postgres.setup_connection(conn)  # times as µs
            await saver_admin.delete_sensors(conn, STORAGE_PREFIX)
            await _reclaim(env)  # the day's raw partition as new
            env.say(f"storing a fleet-shaped sample: {sensors:,} sensors at 1 Hz for {seconds} s")
            began = time.monotonic()
            rows: list[saver_admin.ReadingRow] = []
            for second in range(seconds):
                t = start_us + second * 1_000_000
                rows += [
                    (f"{STORAGE_PREFIX}{s:05d}", "temperature", t + s, round(20 + (s % 50) / 7 + second / 600, 2),
                     "celsius", None)
                    for s in range(sensors)
                ]  # fmt: skip
                if len(rows) >= 50_000:
                    await saver_admin.write_readings(conn, rows)
                    rows = []
            if rows:
                await saver_admin.write_readings(conn, rows)
            env.say(f"stored in {time.monotonic() - began:.0f} s")
        finally:
            await conn.close()
    return await _bytes_per_reading(env, day, day)


async def compact_stored(env: Env) -> tuple[int, float, float]:
    """Packs every closed hour now (saver/compaction.py), as the saver would after its grace:
    (readings packed, CPU µs a reading, of this process and PostgreSQL together, and the most
    memory the pass added to this process, MB)."""
    postgres_pid = processes.pids(("postgres",))["postgres"]
    conn = await access.postgres(
        env.stack, credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
    )
    try:
        before = procfs.tree_cpu_seconds(postgres_pid)
        with procfs.peak_rss_growth_mb() as grown:
            done = await saver_admin.compact(conn)
        used = procfs.tree_cpu_seconds(postgres_pid) - before + done.cpu_s
    finally:
        await conn.close()
    await _reclaim(env)  # what the saver's next history pass does
    env.say(f"compacted {done.readings:,} readings into {done.rows:,} rows in {done.seconds:.1f} s")
    return done.readings, used / done.readings * 1e6 if done.readings else float("nan"), grown[0]


LIST_SENSOR = "list-day"


async def store_list_day(env: Env) -> int:
    """Stores a day of 1 Hz readings (86,400) of this run's list sensor, on the day before the
    history's first; returns the day's start (µs)."""
    day_us = HISTORY_END_US - 40 * 86_400_000_000
    conn = await access.postgres(
        env.stack, credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
    )
    try:
        await postgres.setup_connection(conn)
        for first in range(0, 86_400, 43_200):
            await saver_admin.write_readings(conn, [
                (env.prefix + LIST_SENSOR, "temperature", day_us + s * 1_000_000, round(20 + (s % 600) / 60, 2),
                 "celsius", None)
                for s in range(first, first + 43_200)
            ])  # fmt: skip
    finally:
        await conn.close()
    return day_us


async def list_day(env: Env, day_us: int, repeats: int) -> list[float]:
    """Milliseconds to list the list sensor's day through Envoy (native gRPC), page after page of
    10,000 readings."""
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromMicroseconds(day_us)
    end.FromMicroseconds(day_us + 86_400_000_000)
    times = []
    async with grpc.aio.insecure_channel(env.envoy) as channel:
        stub = assessor_service_pb2_grpc.AssessorServiceStub(channel)
        for _ in range(repeats):
            began, token, count = time.perf_counter(), "", 0
            while True:
                reply = await stub.ListReadings(
                    assessor_service_pb2.ListReadingsRequest(
                        sensor_id=env.prefix + LIST_SENSOR, metric_type="temperature", start_time=start,
                        end_time=end, page_size=10_000, page_token=token,
                    ),
                    timeout=30,
                )  # fmt: skip
                count += len(reply.metrics)
                if not (token := reply.next_page_token):
                    break
            times.append((time.perf_counter() - began) * 1000)
            if count != 86_400:
                raise RuntimeError(f"listed {count:,} readings of a day, not 86,400")
    return times


async def _reclaim(env: Env) -> None:
    owner = await access.postgres(env.stack, credentials.POSTGRES_OWNER)
    try:
        await saver_admin.reclaim(owner)
    finally:
        await owner.close()


async def _bytes_per_reading(env: Env, first: date, last: date) -> float:
    owner = await access.postgres(env.stack, credentials.POSTGRES_OWNER)
    try:
        readings, size = await saver_admin.stored_bytes(owner, first, last)
    finally:
        await owner.close()
    return size / readings if readings else float("nan")


async def stats_queries(env: Env, days: int, repeats: int) -> dict[str, list[float]]:
    """Milliseconds per GetSensorStats call through Envoy (native gRPC), by kind of query."""
    start = timestamp_pb2.Timestamp()
    start.FromMicroseconds(HISTORY_END_US - days * 86_400_000_000 + 1_234_567)  # not aligned: raw edges too
    end = timestamp_pb2.Timestamp()
    end.FromMicroseconds(HISTORY_END_US - 7_654_321)
    kinds = {
        "whole range": assessor_service_pb2.GetSensorStatsRequest(
            sensor_id=HISTORY_SENSOR, metric_type="temperature", start_time=start, end_time=end),
        "whole range, hourly buckets": assessor_service_pb2.GetSensorStatsRequest(
            sensor_id=HISTORY_SENSOR, metric_type="temperature", start_time=start, end_time=end,
            bucket_width=duration_pb2.Duration(seconds=3600)),
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in kinds}
    async with grpc.aio.insecure_channel(env.envoy) as channel:
        stub = assessor_service_pb2_grpc.AssessorServiceStub(channel)
        for kind, request in kinds.items():
            reply = await stub.GetSensorStats(request, timeout=30)
            expected = days * 86_400 - 9
            if reply.stats.count != expected:
                env.say(f"warning: stats count {reply.stats.count}, expected {expected}")
            for _ in range(repeats):
                started = time.perf_counter()
                await stub.GetSensorStats(request, timeout=30)
                times[kind].append((time.perf_counter() - started) * 1000)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def group_queries(env: Env, sensors: int, repeats: int) -> tuple[float, list[float]]:
    """Milliseconds per AggregateSensors call through Envoy (native gRPC): a group of `sensors`
    sensors, each with a reading an hour over the last 24 hours (written through the saver's write
    path), aggregated over the last 24 hours up to now (hourly buckets, the hour under way the last)
    with its top 10, as a dashboard asks: the first call (the assessor reads the day's hourly blocks),
    then `repeats` more."""
    prefix = f"{env.prefix}group-"
    now_us = time.time_ns() // 1000
    start_us = now_us // 3_600_000_000 * 3_600_000_000 - 23 * 3_600_000_000
    conn = await access.postgres(
        env.stack, credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
    )
    try:
        await postgres.setup_connection(conn)  # times as µs
        env.say(f"storing a group of {sensors:,} sensors, a reading an hour for a day")
        for hour in range(24):
            at = start_us + hour * 3_600_000_000  # the last in the hour under way
            rows: list[saver_admin.ReadingRow] = [
                (
                    f"{prefix}{s:05d}",
                    "temperature",
                    at + s * 1000,
                    20 + (s % 97) / 7 + hour / 10,
                    "celsius",
                    None,
                )
                for s in range(sensors)
            ]
            await saver_admin.write_readings(conn, rows)
    finally:
        await conn.close()
    request = assessor_service_pb2.AggregateSensorsRequest(
        sensor_id_prefix=prefix, metric_type="temperature", bucket_width=duration_pb2.Duration(seconds=3600)
    )
    request.start_time.FromMicroseconds(now_us - 24 * 3_600_000_000)
    request.end_time.FromMicroseconds(now_us)
    times: list[float] = []
    async with grpc.aio.insecure_channel(env.envoy) as channel:
        stub = assessor_service_pb2_grpc.AssessorServiceStub(channel)
        started = time.perf_counter()
        stats = (await stub.AggregateSensors(request, timeout=30)).stats
        first_ms = (time.perf_counter() - started) * 1000
        if (stats.sensor_count, stats.count) != (sensors, sensors * 24):
            env.say(f"warning: the group has {stats.sensor_count} sensors, {stats.count} readings")
        for _ in range(repeats):
            started = time.perf_counter()
            await stub.AggregateSensors(request, timeout=30)
            times.append((time.perf_counter() - started) * 1000)
    return first_ms, times
