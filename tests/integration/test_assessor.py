"""The assessor over gRPC and HTTP/JSON through Envoy, checked against what was ingested."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf import duration_pb2, timestamp_pb2

from metrics.v1 import assessor_service_pb2 as pb
from metrics.v1 import event_pb2, metric_pb2, receiver_service_pb2
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import kafka
from testkit.http import http
from tests.helpers import eventually, past_us, wait_consumed
from tests.services import Topics, free_port, private_topics, service_env, start_service, stop_service
from tests.target import Target

HOUR_US = 3_600_000_000
T0 = past_us(16)  # a whole hour
SCENARIO = (10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0)


def ts(us: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(us)
    return t


def iso(us: int) -> str:
    return ts(us).ToJsonString()


async def ingest(
    receiver: ReceiverServiceStub, target: Target, readings: list[tuple[str, str, int, float]]
) -> None:
    """Pushes (sensor, type, time µs, value) readings and waits until the saver has stored them."""
    metrics = []
    for sensor, metric_type, at, value in readings:
        metric = metric_pb2.Metric(sensor_id=sensor, metric_type=metric_type, value=value)
        metric.reading_time.FromMicroseconds(at)
        metrics.append(metric)
    for i in range(0, len(metrics), 10_000):
        request = receiver_service_pb2.PushMetricsRequest(metrics=metrics[i : i + 10_000])
        await receiver.PushMetrics(request, timeout=30)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.events_topic)


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered))) - 1]


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# --- statistics --------------------------------------------------------------------------------


async def test_stats_first_and_last_readings_carry_their_labels(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, sensor_id: str, db: asyncpg.Pool
) -> None:
    # One reading, two answers would be wrong: ListReadings and GetSensorStats both give its labels.
    metrics = []
    for i, site in enumerate(("plant-7", "plant-8")):
        metric = metric_pb2.Metric(
            sensor_id=sensor_id, metric_type="load", value=float(i), labels={"site": site}
        )
        metric.reading_time.FromMicroseconds(T0 + i * 1_000_000)
        metrics.append(metric)
    await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=metrics), timeout=10)

    async def stored() -> None:
        assert await db.fetchval("SELECT count(*) FROM readings WHERE sensor_id = $1", sensor_id) == 2

    await eventually(stored, what="both readings stored")
    reply = await assessor.GetSensorStats(
        pb.GetSensorStatsRequest(
            sensor_id=sensor_id, metric_type="load", start_time=ts(T0), end_time=ts(T0 + HOUR_US)
        ),
        timeout=10,
    )
    assert dict(reply.stats.first_reading.labels) == {"site": "plant-7"}
    assert dict(reply.stats.last_reading.labels) == {"site": "plant-8"}


@pytest.fixture(scope="module")
async def stats_sensor(receiver: ReceiverServiceStub, target: Target) -> tuple[str, list[tuple[int, float]]]:
    """Readings every 7 s from 30 min before T0 to 2 h 40 min after it, values in [-50, 150)."""
    sensor = f"stats-{uuid.uuid4().hex[:12]}"
    rng = random.Random(7)
    readings = [
        (T0 - 1_800_000_000 + 13_000_000 + i * 7_000_000, round(rng.uniform(-50, 150), 3))
        for i in range(1630)
    ]
    await ingest(receiver, target, [(sensor, "load", at, v) for at, v in readings])
    return sensor, readings


async def test_stats_are_exact_over_partial_minutes_and_hours(
    assessor: AssessorServiceStub, stats_sensor: tuple[str, list[tuple[int, float]]]
) -> None:
    sensor, readings = stats_sensor
    start, end = T0 - 20 * 60_000_000 - 17_000_000, T0 + 2 * HOUR_US + 5 * 60_000_000 + 29_000_000
    inside = [(at, v) for at, v in readings if start <= at < end]
    values = [v for _, v in inside]
    reply = await assessor.GetSensorStats(
        pb.GetSensorStatsRequest(
            sensor_id=sensor, metric_type="load", start_time=ts(start), end_time=ts(end)
        ),
        timeout=10,
    )
    stats = reply.stats
    assert stats.count == len(values) > 1000
    assert (stats.min, stats.max) == (min(values), max(values))
    mean = sum(values) / len(values)
    assert close(stats.mean, mean)
    assert close(stats.stddev, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
    # Fewer than 20,000 readings: exact percentiles.
    assert (stats.p50, stats.p95, stats.p99) == tuple(nearest_rank(values, p) for p in (0.5, 0.95, 0.99))
    assert (stats.first_reading.value, stats.first_reading.reading_time.ToMicroseconds()) == (
        inside[0][1],
        inside[0][0],
    )
    assert (stats.last_reading.value, stats.last_reading.reading_time.ToMicroseconds()) == (
        inside[-1][1],
        inside[-1][0],
    )
    assert not stats.buckets


@pytest.mark.parametrize("width_minutes", [10, 60, 1440])  # a day: minutes, hours and readings
async def test_buckets_are_aligned_and_exact(
    width_minutes: int, assessor: AssessorServiceStub, stats_sensor: tuple[str, list[tuple[int, float]]]
) -> None:
    sensor, readings = stats_sensor
    width = width_minutes * 60_000_000
    start, end = T0 - 25 * 60_000_000 + 3_000_000, T0 + 2 * HOUR_US + 11_000_000
    request = pb.GetSensorStatsRequest(sensor_id=sensor, metric_type="load", start_time=ts(start), end_time=ts(end),
                                       bucket_width=duration_pb2.Duration(seconds=width_minutes * 60))  # fmt: skip
    stats = (await assessor.GetSensorStats(request, timeout=10)).stats
    expected: dict[int, list[float]] = {}
    for at, v in readings:
        if start <= at < end:
            expected.setdefault(at // width * width, []).append(v)
    first, last = start // width * width, (end - 1) // width * width
    assert [b.start_time.ToMicroseconds() for b in stats.buckets] == list(range(first, last + 1, width))
    for bucket in stats.buckets:
        values = expected.get(bucket.start_time.ToMicroseconds(), [])
        assert bucket.count == len(values)
        if values:
            assert (bucket.min, bucket.max) == (min(values), max(values))
            assert close(bucket.mean, sum(values) / len(values))
        else:
            assert not bucket.HasField("mean")
    assert sum(b.count for b in stats.buckets) == stats.count


# --- groups -------------------------------------------------------------------------------------


# A group's hours are read once and kept a while (assessor/hour_blocks.py): the groups' readings are
# of a metric type of their own, which no other test's query has made the assessor keep before.
GROUP_TYPE = f"group_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def group(receiver: ReceiverServiceStub, target: Target) -> tuple[str, list[tuple[str, int, float]]]:
    """Five sensors under a prefix, and one beside it, with readings over the three hours before T0:
    (sensor, time µs, value) of the five."""
    prefix = f"group-{uuid.uuid4().hex[:10]}-"
    rng = random.Random(7)
    readings = [
        (f"{prefix}{n}", T0 - rng.randrange(3 * HOUR_US), rng.uniform(-5, 40 + n))
        for n in range(5)
        for _ in range(400)
    ]
    beside = [(prefix[:-1] + "x", T0 - HOUR_US, 1000.0)]
    await ingest(receiver, target, [(s, GROUP_TYPE, at, v) for s, at, v in readings + beside])
    return prefix, readings


def group_request(
    prefix: str, start: int, end: int, width_s: int, top: int = 0, metric_type: str = GROUP_TYPE
) -> pb.AggregateSensorsRequest:
    return pb.AggregateSensorsRequest(sensor_id_prefix=prefix, metric_type=metric_type, start_time=ts(start),
                                      end_time=ts(end), bucket_width=duration_pb2.Duration(seconds=width_s),
                                      top_count=top)  # fmt: skip


@pytest.mark.parametrize("width_s", [3600, 900, 7200])
async def test_a_group_is_aggregated_per_bucket_and_its_top_sensors_ranked(
    width_s: int, assessor: AssessorServiceStub, group: tuple[str, list[tuple[str, int, float]]]
) -> None:
    prefix, readings = group
    width = width_s * 1_000_000
    # A range inside whole buckets is widened to them.
    start, end = T0 - 3 * HOUR_US + 5 * 60_000_000, T0 - 10 * 60_000_000
    stats = (
        await assessor.AggregateSensors(group_request(prefix, start, end, width_s, top=3), timeout=10)
    ).stats
    first, last = start - start % width, -(-end // width) * width
    assert (stats.start_time.ToMicroseconds(), stats.end_time.ToMicroseconds()) == (first, last)
    expected: dict[int, list[tuple[str, float]]] = {}
    for sensor, at, value in readings:
        if first <= at < last:
            expected.setdefault(at // width * width, []).append((sensor, value))
    assert [b.start_time.ToMicroseconds() for b in stats.buckets] == list(range(first, last, width))
    for bucket in stats.buckets:
        got = expected.get(bucket.start_time.ToMicroseconds(), [])
        values = [v for _, v in got]
        assert (bucket.count, bucket.sensor_count) == (len(values), len({s for s, _ in got}))
        assert (bucket.min, bucket.max) == (min(values), max(values))
        assert close(bucket.mean, sum(values) / len(values))
    inside = [(s, v) for s, at, v in readings if first <= at < last]
    assert (stats.count, stats.sensor_count) == (len(inside), 5)
    assert close(stats.mean, sum(v for _, v in inside) / len(inside))
    means = {s: [v for t, v in inside if t == s] for s in {s for s, _ in inside}}
    ranked = sorted(means, key=lambda s: -sum(means[s]) / len(means[s]))[:3]
    assert [t.sensor_id for t in stats.top_sensors] == ranked
    for top in stats.top_sensors:
        values = means[top.sensor_id]
        assert (top.count, top.min, top.max) == (len(values), min(values), max(values))
        assert close(top.mean, sum(values) / len(values))


@pytest.mark.parametrize(
    ("width_s", "span_h", "top", "field"),
    [(900, 7, 0, "bucket_width"), (90, 1, 0, "bucket_width"), (3600, 1, 101, "top_count"), (60, 6, 0, None)],
)
async def test_a_group_request_out_of_bounds_is_refused_naming_the_field(
    width_s: int, span_h: int, top: int, field: str | None, assessor: AssessorServiceStub
) -> None:
    request = group_request("plant-", T0 - span_h * HOUR_US, T0, width_s, top)
    if field is None:  # the widest minute range
        assert len((await assessor.AggregateSensors(request, timeout=10)).stats.buckets) == 360
        return
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await assessor.AggregateSensors(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(f"{field}:"), refused.value.details()


async def test_percentiles_from_histograms_are_within_one_percent(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target
) -> None:
    sensor = f"hist-{uuid.uuid4().hex[:12]}"
    rng = random.Random(11)
    readings = [(T0 + 1_000_000 + i * 2_000_000, round(rng.lognormvariate(3, 1), 4)) for i in range(30_000)]
    await ingest(receiver, target, [(sensor, "flow", at, v) for at, v in readings])
    start, end = T0 + 20 * 60_000_000 + 500_000, T0 + 16 * HOUR_US + 7 * 60_000_000
    values = [v for at, v in readings if start <= at < end]
    assert len(values) > 20_000
    stats = (await assessor.GetSensorStats(
        pb.GetSensorStatsRequest(sensor_id=sensor, metric_type="flow", start_time=ts(start), end_time=ts(end)),
        timeout=10,
    )).stats  # fmt: skip
    assert stats.count == len(values)
    assert (stats.min, stats.max) == (min(values), max(values))
    assert close(stats.mean, sum(values) / len(values))
    for got, p in zip((stats.p50, stats.p95, stats.p99), (0.5, 0.95, 0.99), strict=True):
        exact = nearest_rank(values, p)
        assert abs(got - exact) <= 0.01 * exact, (p, got, exact)


async def test_empty_range_has_a_count_and_no_numbers(assessor: AssessorServiceStub, sensor_id: str) -> None:
    stats = (await assessor.GetSensorStats(
        pb.GetSensorStatsRequest(sensor_id=sensor_id, metric_type="load", start_time=ts(T0), end_time=ts(T0 + HOUR_US)),
        timeout=10,
    )).stats  # fmt: skip
    assert stats.count == 0
    assert not any(stats.HasField(f) for f in ("min", "max", "mean", "stddev", "p50", "first_reading"))


# --- events ------------------------------------------------------------------------------------


async def test_list_events_pages_newest_first_and_is_stable_under_inserts(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target, sensor_id: str
) -> None:
    # 25 runs of three warnings: 25 events, at the third reading of each run.
    pattern = (100.0, 101.0, 102.0, 10.0)
    readings = [(sensor_id, "temperature", T0 + i * 1_000_000, pattern[i % 4]) for i in range(100)]
    await ingest(receiver, target, readings)
    expected = [T0 + (4 * run + 2) * 1_000_000 for run in range(25)][::-1]
    request = pb.ListEventsRequest(
        sensor_id=sensor_id, start_time=ts(T0), end_time=ts(T0 + HOUR_US), page_size=7
    )
    seen: list[int] = []
    pages = 0
    while True:
        reply = await assessor.ListEvents(request, timeout=10)
        pages += 1
        seen += [e.reading_time.ToMicroseconds() for e in reply.events]
        if pages == 1:
            # New events while paging, newer than any listed: later pages neither skip nor repeat.
            later = [(sensor_id, "temperature", T0 + (200 + i) * 1_000_000, 120.0) for i in range(3)]
            await ingest(receiver, target, later)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert pages == 4
    assert seen == expected
    assert all(e.value == 102.0 and e.kind == event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED for e in reply.events)


async def test_list_events_filters(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target, sensor_id: str
) -> None:
    await ingest(
        receiver, target, [(sensor_id, "temperature", T0 + i * 1_000_000, v) for i, v in enumerate(SCENARIO)]
    )
    base = {"sensor_id": sensor_id, "start_time": ts(T0), "end_time": ts(T0 + HOUR_US)}
    assert len((await assessor.ListEvents(pb.ListEventsRequest(**base), timeout=10)).events) == 2
    kind = event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
    assert len((await assessor.ListEvents(pb.ListEventsRequest(**base, kind=kind), timeout=10)).events) == 2
    assert not (
        await assessor.ListEvents(pb.ListEventsRequest(**base, metric_type="humidity"), timeout=10)
    ).events
    narrow = pb.ListEventsRequest(
        sensor_id=sensor_id, start_time=ts(T0 + 4_000_000), end_time=ts(T0 + HOUR_US)
    )
    assert [e.value for e in (await assessor.ListEvents(narrow, timeout=10)).events] == [98.0]


# --- sensors and readings ----------------------------------------------------------------------


async def test_list_sensors_pages_with_last_values(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target
) -> None:
    prefix = f"fleet-{uuid.uuid4().hex[:8]}-"
    readings = []
    for i in range(5):
        for j, metric_type in enumerate(("humidity", "temperature")):
            readings += [
                (f"{prefix}{i}", metric_type, T0 + k * 1_000_000 + j, float(10 * i + k)) for k in range(3)
            ]
    await ingest(receiver, target, readings)
    request = pb.ListSensorsRequest(sensor_id_prefix=prefix, page_size=2)
    sensors = []
    while True:
        reply = await assessor.ListSensors(request, timeout=10)
        sensors += reply.sensors
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert [s.sensor_id for s in sensors] == [f"{prefix}{i}" for i in range(5)]
    for i, sensor in enumerate(sensors):
        assert [(m.metric_type, m.value) for m in sensor.last_metrics] == [
            ("humidity", 10.0 * i + 2),
            ("temperature", 10.0 * i + 2),
        ]
        assert sensor.last_seen_time.ToMicroseconds() == T0 + 2_000_001


async def test_list_readings_pages_in_time_order_over_types(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target, sensor_id: str
) -> None:
    readings = [(sensor_id, t, T0 + k * 1_000_000, float(k)) for k in range(13) for t in ("a.x", "b.y")]
    await ingest(receiver, target, readings)
    request = pb.ListReadingsRequest(
        sensor_id=sensor_id, start_time=ts(T0), end_time=ts(T0 + HOUR_US), page_size=5
    )
    got = []
    while True:
        reply = await assessor.ListReadings(request, timeout=10)
        got += [(m.metric_type, m.reading_time.ToMicroseconds(), m.value) for m in reply.metrics]
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert got == [(t, at, v) for _, t, at, v in sorted(readings, key=lambda r: (r[2], r[1]))]
    one_type = pb.ListReadingsRequest(
        sensor_id=sensor_id, metric_type="b.y", start_time=ts(T0), end_time=ts(T0 + HOUR_US)
    )
    assert len((await assessor.ListReadings(one_type, timeout=10)).metrics) == 13


# --- live events -------------------------------------------------------------------------------


async def push_scenario(receiver: ReceiverServiceStub, sensor: str) -> None:
    metrics = [metric_pb2.Metric(sensor_id=sensor, metric_type="temperature", value=v) for v in SCENARIO]
    await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=metrics), timeout=10)


async def test_watch_events_over_grpc(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, sensor_id: str
) -> None:
    call = assessor.WatchEvents(pb.WatchEventsRequest(sensor_id=sensor_id), timeout=60)
    await asyncio.sleep(0)  # the call is open; events raised from now on are delivered

    async def first_two() -> list[float]:
        values = []
        async for reply in call:
            values.append(reply.event.value)
            if len(values) == 2:
                return values
        return values

    # Response headers arrive once the server has subscribed the stream.
    await asyncio.wait_for(call.initial_metadata(), 10)
    reader = asyncio.create_task(first_two())
    await push_scenario(receiver, sensor_id)
    assert await asyncio.wait_for(reader, 30) == [99.0, 98.0]
    call.cancel()


async def open_sse(
    target: Target, query: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    """GET /v1/events:watch; returns once the response headers are in (the subscription is live)."""
    host, port = target.envoy.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /v1/events:watch?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status = await asyncio.wait_for(reader.readline(), 10)
    assert b" 200 " in status, status
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return reader, writer, headers


async def test_watch_events_as_server_sent_events_through_envoy(
    receiver: ReceiverServiceStub, target: Target, sensor_id: str
) -> None:
    reader, writer, headers = await open_sse(target, f"sensorId={sensor_id}")
    assert headers["content-type"] == "text/event-stream"
    await push_scenario(receiver, sensor_id)
    received = []
    try:
        while len(received) < 2:
            line = (await asyncio.wait_for(reader.readline(), 30)).decode()
            # Chunked transfer: chunk sizes and SSE lines interleave; the events are the data lines.
            if line.startswith("data:"):
                received.append(json.loads(line.removeprefix("data:"))["event"]["value"])
    finally:
        writer.close()
    assert received == [99, 98]


# --- the live feed: the events topic as produced -------------------------------------------------


class PrivateAssessor:
    """An assessor of its own that watches a private events topic, and its log."""

    def __init__(self, target: Target, topics: Topics, channel: grpc.aio.Channel, log: Path) -> None:
        self.target, self.topics, self.channel, self.log = target, topics, channel, log

    def watch(
        self, sensor_id: str
    ) -> grpc.aio.UnaryStreamCall[pb.WatchEventsRequest, pb.WatchEventsResponse]:
        return AssessorServiceStub(self.channel).WatchEvents(
            pb.WatchEventsRequest(sensor_id=sensor_id), timeout=60
        )

    async def wait_logged(self, text: str, what: str) -> None:
        async def logged() -> None:
            assert text in self.log.read_text(), self.log.read_text()[-2000:]

        await eventually(logged, what=what)

    async def produce(self, sensor_id: str, values: list[bytes], headers: list[tuple[str, bytes]]) -> None:
        """Writes the values to its events topic in this order, keyed by the sensor (one partition)."""
        producer = AIOKafkaProducer(**kafka.client_options(self.target.kafka()))
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(
                    self.topics.events, value, key=sensor_id.encode(), headers=headers
                )
        finally:
            await producer.stop()


@pytest.fixture
async def private_assessor(target: Target, tmp_path: Path) -> AsyncIterator[PrivateAssessor]:
    async with private_topics(target) as topics:
        port = free_port()
        env = service_env(target, topics, "assessor", {"METRICS_ASSESSOR_GRPC_PORT": str(port)})
        log = tmp_path / "assessor.log"
        process = await start_service("assessor", env, log)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assessor = PrivateAssessor(target, topics, channel, log)
                await assessor.wait_logged("live event feed: following", "the assessor's feed is live")
                yield assessor
        finally:
            assert await stop_service(process) == 0, log.read_text()[-2000:]


def made_event(sensor_id: str, value: float) -> event_pb2.Event:
    event = event_pb2.Event(
        event_id=uuid.uuid4().hex, kind=event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED, sensor_id=sensor_id,
        metric_type="temperature", value=value, threshold=95.0, count=3,
    )  # fmt: skip
    now_us = time.time_ns() // 1000
    event.reading_time.FromMicroseconds(now_us)
    event.detect_time.FromMicroseconds(now_us)
    return event


async def watched(call: grpc.aio.UnaryStreamCall[pb.WatchEventsRequest, pb.WatchEventsResponse],
                  count: int) -> list[event_pb2.Event]:  # fmt: skip
    events = []
    async for reply in call:
        events.append(reply.event)
        if len(events) == count:
            break
    return events


async def test_an_event_produced_twice_reaches_a_watcher_once(
    private_assessor: PrivateAssessor, sensor_id: str
) -> None:
    call = private_assessor.watch(sensor_id)
    await asyncio.wait_for(call.initial_metadata(), 10)  # subscribed: events from now on reach it
    twice, after = made_event(sensor_id, 99.0), made_event(sensor_id, 98.0)
    # As a processor that crashed after producing it: the same bytes again, then its next event.
    again = twice.SerializeToString()
    await private_assessor.produce(
        sensor_id, [again, again, after.SerializeToString()], kafka.headers(kafka.EVENT_TYPE)
    )
    # In one partition, in order: once the next event is here, the repeat has been passed over.
    assert await asyncio.wait_for(watched(call, 2), 30) == [twice, after]
    call.cancel()


async def test_a_record_that_is_not_an_event_does_not_break_the_watch(
    private_assessor: PrivateAssessor, sensor_id: str
) -> None:
    call = private_assessor.watch(sensor_id)
    await asyncio.wait_for(call.initial_metadata(), 10)
    no_id = made_event(sensor_id, 97.0)
    no_id.event_id = ""
    event_type = kafka.headers(kafka.EVENT_TYPE)
    await private_assessor.produce(
        sensor_id, [b"\xff\xfe not protobuf", no_id.SerializeToString()], event_type
    )
    await private_assessor.produce(
        sensor_id, [made_event(sensor_id, 96.0).SerializeToString()], []
    )  # no type
    good = made_event(sensor_id, 99.0)
    await private_assessor.produce(sensor_id, [good.SerializeToString()], event_type)
    assert await asyncio.wait_for(watched(call, 1), 30) == [good]
    call.cancel()
    # Each bad record was read and skipped, with its place and reason.
    for offset, reason in enumerate(
        ("value is not a metrics.v1.Event", "event.event_id", "no message-type header")
    ):
        await private_assessor.wait_logged(f"@{offset}: skipped, {reason}", f"record {offset} skipped")


async def test_the_watch_is_unavailable_while_the_feed_is_not_live(
    target: Target, sensor_id: str, tmp_path: Path
) -> None:
    # A topic that does not exist: the feed never becomes live, and says so to each watcher.
    topic = {"METRICS_EVENTS_TOPIC": f"no-such-topic-{sensor_id}"}
    async with assessor_of_its_own(target, tmp_path, topic) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in stub.WatchEvents(pb.WatchEventsRequest(), timeout=10):
                pass
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
    assert "live event feed" in (error.value.details() or "")


@asynccontextmanager
async def assessor_of_its_own(
    target: Target, tmp_path: Path, settings: dict[str, str]
) -> AsyncIterator[AssessorServiceStub]:
    """An assessor of the test's own with these settings, running while the block runs."""
    port = free_port()
    env = service_env(target, None, "assessor", {"METRICS_ASSESSOR_GRPC_PORT": str(port), **settings})
    log = tmp_path / "assessor.log"
    process = await start_service("assessor", env, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            yield AssessorServiceStub(channel)
    finally:
        assert await stop_service(process) == 0, (await asyncio.to_thread(log.read_text))[-2000:]


async def test_a_late_reading_of_a_kept_hour_shows_within_the_refresh(
    receiver: ReceiverServiceStub, target: Target, sensor_id: str, tmp_path: Path
) -> None:
    # A private assessor that reads a kept hour again after a second: an hour's statistics are
    # served as kept, then with the late readings within about that long, exactly.
    metric_type = f"late_{uuid.uuid4().hex[:8]}"
    prefix = f"{sensor_id}-"
    hour = T0 - 5 * HOUR_US
    await ingest(
        receiver, target, [(f"{prefix}{n}", metric_type, hour + n * 1_000_000, 10.0 + n) for n in range(3)]
    )
    async with assessor_of_its_own(target, tmp_path, {"METRICS_ASSESSOR_GROUP_REFRESH_S": "1"}) as stub:
        request = group_request(prefix, hour, hour + HOUR_US, 3600, metric_type=metric_type)
        kept = (await stub.AggregateSensors(request, timeout=10)).stats
        assert (kept.count, kept.sensor_count, kept.max) == (3, 3, 12.0)
        # Late: a fourth sensor's reading of that hour, and a higher one of the first.
        await ingest(receiver, target, [(f"{prefix}3", metric_type, hour + 60_000_000, 50.0),
                                        (f"{prefix}0", metric_type, hour + 61_000_000, 70.0)])  # fmt: skip

        async def refreshed() -> Any:
            found = (await stub.AggregateSensors(request, timeout=10)).stats
            assert (found.count, found.sensor_count, found.max) == (5, 4, 70.0), found
            return found

        began = time.monotonic()
        found = await eventually(refreshed, timeout=10, what="the late readings in the group")
        print(f"shown {time.monotonic() - began:.2f} s after they were stored")
        ranked = [t.sensor_id for t in found.top_sensors]
        assert ranked == [f"{prefix}3", f"{prefix}0", f"{prefix}2", f"{prefix}1"]


# --- the original system's routes ---------------------------------------------------------------


async def test_legacy_routes_report_the_original_figures(target: Target, sensor_id: str) -> None:
    for value in SCENARIO:
        status, body = await http(
            "POST", f"{target.envoy_url}/api/v1/sensors/{sensor_id}/measurements", {"temperature": value}
        )
        assert (status, body) == (200, {"result": True, "response": "OK"})

    async def events_stored() -> dict[str, object]:
        status, body = await http("GET", f"{target.envoy_url}/api/v1/sensors/{sensor_id}/events")
        assert status == 200
        assert len(body["events"]) == 2
        return body  # type: ignore[no-any-return]

    body = await eventually(events_stored)
    assert body["sensorUuid"] == sensor_id
    assert [(e["temperature"], e["type"]) for e in body["events"]] == [
        (99, "TEMPERATURE_EXCEEDED"),
        (98, "TEMPERATURE_EXCEEDED"),
    ]
    assert all(e["at"].endswith("Z") and "T" in e["at"] for e in body["events"])
    assert body["events"][0]["at"] < body["events"][1]["at"]

    status, measured = await http("GET", f"{target.envoy_url}/api/v1/sensors/{sensor_id}/measurements")
    assert (status, measured) == (200, {
        "sensorUuid": sensor_id, "averageLastHour": 77.625, "averageLast7Days": 77.625, "maxLast30Days": 107,
    })  # fmt: skip


async def test_legacy_routes_for_an_unknown_sensor(target: Target, sensor_id: str) -> None:
    assert await http("GET", f"{target.envoy_url}/api/v1/sensors/{sensor_id}/events") == (
        200, {"sensorUuid": sensor_id, "events": []}
    )  # fmt: skip
    assert await http("GET", f"{target.envoy_url}/api/v1/sensors/{sensor_id}/measurements") == (
        200, {"sensorUuid": sensor_id}
    )  # fmt: skip


async def test_http_json_queries_through_envoy(
    receiver: ReceiverServiceStub, target: Target, sensor_id: str
) -> None:
    await ingest(
        receiver, target, [(sensor_id, "temperature", T0 + i * 1_000_000, v) for i, v in enumerate(SCENARIO)]
    )
    window = f"startTime={iso(T0)}&endTime={iso(T0 + HOUR_US)}"
    status, body = await http(
        "GET",
        f"{target.envoy_url}/v1/sensors/{sensor_id}/stats?metricType=temperature&{window}&bucketWidth=600s",
    )
    assert status == 200
    assert (body["stats"]["count"], body["stats"]["mean"], body["stats"]["max"]) == ("8", 77.625, 107)
    assert len(body["stats"]["buckets"]) == 6
    status, body = await http("GET", f"{target.envoy_url}/v1/events?sensorId={sensor_id}&{window}")
    assert status == 200 and [e["value"] for e in body["events"]] == [98, 99]
    status, body = await http(
        "GET", f"{target.envoy_url}/v1/sensors/{sensor_id}/readings?{window}&pageSize=3"
    )
    assert status == 200 and [m["value"] for m in body["metrics"]] == [10, 100, 97] and body["nextPageToken"]
    status, body = await http("GET", f"{target.envoy_url}/v1/sensors?sensorIdPrefix={sensor_id}")
    assert status == 200 and [s["sensorId"] for s in body["sensors"]] == [sensor_id]


# --- bad requests ------------------------------------------------------------------------------

WINDOW = f"startTime={iso(T0)}&endTime={iso(T0 + HOUR_US)}"


@pytest.mark.parametrize(
    ("path", "mentions"),
    [
        (f"/v1/events?startTime={iso(T0)}", "end_time"),
        ("/v1/events", "start_time"),
        (f"/v1/events?startTime={iso(T0 + HOUR_US)}&endTime={iso(T0)}", "end_time"),
        (f"/v1/events?{WINDOW}&pageSize=-1", "page_size"),
        (f"/v1/events?{WINDOW}&pageToken=not-a-token", "page_token"),
        (f"/v1/events?{WINDOW}&kind=NO_SUCH_KIND", "kind"),
        (f"/v1/events?{WINDOW}&bogus=1", "bogus"),
        ("/v1/events?startTime=yesterday&endTime=today", "_time: invalid value"),
        (f"/v1/sensors/s-1/stats?{WINDOW}", "metric_type"),
        (f"/v1/sensors/s-1/stats?metricType=t&{WINDOW}&bucketWidth=90s", "bucket_width"),
        (f"/v1/sensors/s-1/stats?metricType=t&{WINDOW}&bucketWidth=1s", "bucket_width"),
        (
            f"/v1/sensors/s-1/stats?metricType=t&startTime={iso(0)}&endTime={iso(T0)}&bucketWidth=60s",
            "end_time",
        ),
        (f"/v1/sensors/s-1/readings?{WINDOW}&pageSize=-5", "page_size"),
        ("/v1/sensors?pageToken=WzEsIngiLCJ5Il0", "page_token"),
        ("/api/v1/sensors//events", "sensor_uuid"),
        ("/api/v1/sensors//measurements", "sensor_uuid"),
    ],
)
async def test_bad_queries_get_400_naming_the_problem(target: Target, path: str, mentions: str) -> None:
    status, body = await http("GET", target.envoy_url + path)
    assert status == 400, body
    assert mentions in str(body), body


async def test_page_token_of_other_filters_is_refused(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target, sensor_id: str
) -> None:
    await ingest(
        receiver, target, [(sensor_id, "temperature", T0 + i * 1_000_000, v) for i, v in enumerate(SCENARIO)]
    )
    first = pb.ListEventsRequest(
        sensor_id=sensor_id, start_time=ts(T0), end_time=ts(T0 + HOUR_US), page_size=1
    )
    reply = await assessor.ListEvents(first, timeout=10)
    assert reply.next_page_token
    other = pb.ListEventsRequest(sensor_id=sensor_id, metric_type="humidity", start_time=first.start_time,
                                 end_time=first.end_time, page_token=reply.next_page_token)  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await assessor.ListEvents(other, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (error.value.details() or "")


async def test_the_query_role_cannot_write(db: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.PostgresError, match=r"read-only|permission denied"):
        await db.execute("DELETE FROM events WHERE false")
