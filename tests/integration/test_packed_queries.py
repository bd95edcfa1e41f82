"""Queries over packed hours answer as over raw ones: readings generated (irregular times, repeats,
late arrivals, extremes within ±1e150, -0.0) are stored through the pipeline, and every query's
answer is compared with a model of the raw readings, then again once their hours are packed, and
after late readings and resends into the packed hours, raw and packed mixed."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from metrics.v1 import assessor_service_pb2 as pb
from metrics.v1 import metric_pb2, receiver_service_pb2
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from runtime import postgres
from saver import admin as saver_admin
from stack import access, credentials
from stack import settings as stack_settings
from tests.helpers import past_us, wait_consumed
from tests.target import Target

pytestmark = pytest.mark.local_stack  # packs the hours itself, as the saver's writer

HOUR_US = 3_600_000_000
START_US = past_us(30)  # closed hours: compaction may pack them at once
TYPES = ("temperature", "vibration")
Reading = tuple[str, str, int, float]  # sensor, type, time (µs), value


def ts(us: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(us)
    return t


def generate(rng: random.Random, sensors: list[str], hours: int) -> list[Reading]:
    readings = []
    for sensor in sensors:
        for metric_type in TYPES:
            t = START_US + rng.randrange(600_000_000)
            while t < START_US + hours * HOUR_US:
                value = rng.choice([
                    round(rng.uniform(-40, 60), 2), round(rng.uniform(-40, 60), 2), round(rng.uniform(0, 1), 4),
                    rng.uniform(-1e150, 1e150), 1e150, -1e150, -0.0, 0.0, 5e-324, rng.random(),
                ])  # fmt: skip
                readings.append((sensor, metric_type, t, value))
                t += rng.choice([1, 1_000_000, 1_000_000, 13_000_000, 600_000_000])
    return readings


class Model:
    """The readings as storing keeps them: the first of a (sensor, type, time)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], dict[int, float]] = {}

    def add(self, readings: list[Reading]) -> None:
        for sensor, metric_type, t, value in readings:
            self.series.setdefault((sensor, metric_type), {}).setdefault(t, value)

    def between(self, key: tuple[str, str], start: int, end: int) -> list[tuple[int, float]]:
        found = self.series.get(key, {})
        return sorted((t, v) for t, v in found.items() if start <= t < end)


async def push(receiver: ReceiverServiceStub, target: Target, readings: list[Reading]) -> None:
    """In order, a call at a time (the first of a time is the one kept), then waits until stored."""
    for i in range(0, len(readings), 500):
        metrics = []
        for sensor, metric_type, at, value in readings[i : i + 500]:
            metric = metric_pb2.Metric(sensor_id=sensor, metric_type=metric_type, value=value, unit="u")
            metric.reading_time.FromMicroseconds(at)
            metrics.append(metric)
        await receiver.PushMetrics(receiver_service_pb2.PushMetricsRequest(metrics=metrics), timeout=30)
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic)


def requests(
    rng: random.Random, sensors: list[str], hours: int
) -> list[pb.GetSensorStatsRequest | pb.ListReadingsRequest]:
    """Ranges that cut hours and minutes anywhere, a whole one, and one past every reading."""
    asked: list[pb.GetSensorStatsRequest | pb.ListReadingsRequest] = []
    end = START_US + hours * HOUR_US
    ranges = [(START_US - HOUR_US, end + HOUR_US), (START_US + HOUR_US, START_US + 2 * HOUR_US)]
    ranges += [tuple(sorted(rng.randrange(START_US, end) for _ in range(2))) for _ in range(6)]
    for start, stop in ranges:
        for sensor in sensors:
            for metric_type in TYPES:
                for width in (None, 60, 420, 3600):
                    request = pb.GetSensorStatsRequest(sensor_id=sensor, metric_type=metric_type,
                                                       start_time=ts(start), end_time=ts(stop + 1))  # fmt: skip
                    if width:
                        request.bucket_width.CopyFrom(duration_pb2.Duration(seconds=width))
                    asked.append(request)
            asked.append(pb.ListReadingsRequest(sensor_id=sensor, start_time=ts(start), end_time=ts(stop + 1),
                                                page_size=rng.choice([7, 1000])))  # fmt: skip
    return asked


async def answers(
    assessor: AssessorServiceStub, asked: list[pb.GetSensorStatsRequest | pb.ListReadingsRequest]
) -> list[list[bytes]]:
    """Each request's answer, serialized (deterministically); a listing's pages, each."""
    found = []
    for request in asked:
        if isinstance(request, pb.GetSensorStatsRequest):
            reply = await assessor.GetSensorStats(request, timeout=30)
            found.append([reply.SerializeToString(deterministic=True)])
            continue
        pages, token = [], ""
        while True:
            page = pb.ListReadingsRequest()
            page.CopyFrom(request)
            page.page_token = token
            reply = await assessor.ListReadings(page, timeout=30)
            pages.append(reply.SerializeToString(deterministic=True))
            if not (token := reply.next_page_token):
                break
        found.append(pages)
    return found


def check_against(
    model: Model, asked: list[pb.GetSensorStatsRequest | pb.ListReadingsRequest], found: list[list[bytes]]
) -> None:
    """What the model says of every answer: counts, extremes, first and last, exact percentiles,
    buckets' counts, the listed readings in order."""
    for request, pages in zip(asked, found, strict=True):
        start, end = request.start_time.ToMicroseconds(), request.end_time.ToMicroseconds()
        if isinstance(request, pb.GetSensorStatsRequest):
            stats = pb.GetSensorStatsResponse.FromString(pages[0]).stats
            expected = model.between((request.sensor_id, request.metric_type), start, end)
            values = sorted(v for _, v in expected)
            assert stats.count == len(expected), request
            if not expected:
                continue
            assert (stats.min, stats.max) == (values[0], values[-1]), request
            # A mean is a sum of doubles in some order: right within rounding of the largest.
            assert abs(stats.mean - math.fsum(values) / len(values)) <= 1e-12 * max(map(abs, values)), request
            first, last = expected[0], expected[-1]
            assert (stats.first_reading.reading_time.ToMicroseconds(), stats.first_reading.value) == first
            assert (stats.last_reading.reading_time.ToMicroseconds(), stats.last_reading.value) == last
            ranks = [values[max(1, math.ceil(p * len(values))) - 1] for p in (0.5, 0.95, 0.99)]
            assert [stats.p50, stats.p95, stats.p99] == ranks, request
            if request.HasField("bucket_width"):
                width = request.bucket_width.ToMicroseconds()
                counts: dict[int, int] = {}
                for t, _ in expected:
                    counts[t // width] = counts.get(t // width, 0) + 1
                assert {
                    b.start_time.ToMicroseconds() // width: b.count for b in stats.buckets if b.count
                } == counts
        else:
            listed = [
                (m.metric_type, m.reading_time.ToMicroseconds(), m.value, m.unit)
                for page in pages
                for m in pb.ListReadingsResponse.FromString(page).metrics
            ]
            expected_rows = sorted(
                (t, metric_type, v)
                for metric_type in TYPES
                for t, v in model.between((request.sensor_id, metric_type), start, end)
            )
            assert listed == [(m, t, v, "u") for t, m, v in expected_rows], request


async def raw_count(conn: asyncpg.Connection, prefix: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM readings_raw WHERE series_id = ANY(ARRAY("
        "SELECT series_id FROM series WHERE starts_with(sensor_id, $1)))",
        prefix,
    )
    return count


@pytest.fixture
async def writer() -> AsyncIterator[asyncpg.Connection]:
    conn = await access.postgres(
        stack_settings.load(), credentials.POSTGRES_WRITER, server_settings=postgres.SERVER_SETTINGS
    )
    yield conn
    await conn.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_query_answers_the_same_over_raw_packed_and_mixed_hours(
    seed: int, receiver: ReceiverServiceStub, assessor: AssessorServiceStub, target: Target,
    writer: asyncpg.Connection,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    prefix = f"packed-{uuid.uuid4().hex[:8]}-"
    sensors = [f"{prefix}{i}" for i in range(2)]
    hours = 3
    readings = generate(rng, sensors, hours)
    resent = rng.sample(readings, len(readings) // 10)  # the same times again, other values: not kept
    model = Model()
    model.add(readings)
    await push(receiver, target, readings + [(s, m, t, v + 1) for s, m, t, v in resent])
    asked = requests(rng, sensors, hours)
    raw = await answers(assessor, asked)
    check_against(model, asked, raw)

    stored = sum(len(s) for s in model.series.values())
    assert await saver_admin.stored_count(writer, prefix) == stored
    done = await saver_admin.compact(writer, 0, prefix)
    assert done.readings == stored, "every reading packed"
    assert await raw_count(writer, prefix) == 0, "none raw"
    assert await answers(assessor, asked) == raw, "packed: the same answers"

    # Late readings into the packed hours, and resends of packed ones: raw and packed mixed.
    late = [
        (s, m, t + 7, round(rng.uniform(-1e3, 1e3), 3))
        for s, m, t, _ in rng.sample(readings, len(readings) // 5)
    ]
    model.add(late)
    await push(receiver, target, late + [(s, m, t, v - 1) for s, m, t, v in rng.sample(readings, 50)])
    mixed = await answers(assessor, asked)
    check_against(model, asked, mixed)
    new = {(s, m, t) for s, m, t, _ in late} - {(s, m, t) for s, m, t, _ in readings}
    assert await raw_count(writer, prefix) == len(new), "the late ones raw"
    assert await saver_admin.stored_count(writer, prefix) == stored + len(new)

    await saver_admin.compact(writer, 0, prefix)
    assert await raw_count(writer, prefix) == 0
    assert await answers(assessor, asked) == mixed, "packed again: the same answers"
