"""The assessor's gRPC service and its process: queries over the stored readings and events."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
from google.api import httpbody_pb2

from assessor import groups, horizons, hour_blocks, readings, remote_read, requests
from assessor.aggregates import HOUR_US, MINUTE_US, range_aggregate
from assessor.database import Database
from assessor.settings import AssessorSettings
from assessor.stats import Reading, bucket_count, sensor_stats
from assessor.watch import EventHub, Filter
from metrics.v1 import assessor_service_pb2 as pb
from metrics.v1 import assessor_service_pb2_grpc, event_pb2, metric_pb2, sensor_pb2, stats_pb2
from runtime import paging, postgres, settings
from runtime.errors import InvalidArgument, Violation, grpc_errors, grpc_stream_errors
from runtime.grpc_server import GrpcServer, add_servicer
from runtime.identity import Identity
from runtime.identity import caller as caller_of
from runtime.lifecycle import Stopped, retry_until_stopped, shut_down
from runtime.logging import setup_logging
from runtime.validation import LEGACY_METRIC_TYPE

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["AssessorService"]
LEGACY_EVENT_TYPE = "TEMPERATURE_EXCEEDED"
DAY_US = 24 * HOUR_US
MAX_BUCKETS = 1_000
# At most this many sensors of the highest mean in AggregateSensors.
MAX_TOP = 100

Context = grpc.aio.ServicerContext[Any, Any]

# The best plan of a range query depends on the range: plan each with its values. The name shows in
# pg_stat_activity, on the primary and on a replica.
SERVER_SETTINGS = {
    **postgres.SERVER_SETTINGS,
    "plan_cache_mode": "force_custom_plan",
    "application_name": "assessor",
}

EVENT_COLUMNS = (
    "event_id, kind, sensor_id, metric_type, value, reading_time, threshold, count, detect_time, "
    "rule_id, severity, alarm_id, alarm"
)

LEGACY_EVENTS = """
SELECT value, reading_time FROM events
WHERE sensor_id = $1 AND metric_type = $2 AND kind = $3
ORDER BY reading_time, event_id
"""

SENSORS = """
SELECT sensor_id, metric_type, reading_time, value, unit FROM latest_readings
WHERE sensor_id IN (
    SELECT DISTINCT sensor_id FROM latest_readings
    WHERE sensor_id > $1 AND sensor_id >= $2 AND sensor_id < $3
      AND ($5::text[] IS NULL OR sensor_id ^@ ANY($5::text[]))
    ORDER BY sensor_id LIMIT $4
)
ORDER BY sensor_id, metric_type
"""
# Sensor ids are ASCII (receiver/validation.py): a prefix of other characters matches none, and
# this is above every id.
ID_PREFIX = re.compile(r"[A-Za-z0-9._:-]*")
ID_CEILING = "\x7f"

METRIC_TYPES = "SELECT metric_type FROM latest_readings WHERE sensor_id = $1 ORDER BY metric_type"

# A reading of ListReadings: time (µs), metric type, value, unit, labels (JSON).
Row = tuple[int, str, float, str | None, str | None]


class Assessor(assessor_service_pb2_grpc.AssessorServiceServicer):
    def __init__(
        self, db: Database, hub: EventHub, group_refresh_s: float, read_limits: remote_read.Limits
    ) -> None:
        self._db = db
        self._read_limits = read_limits
        self._blocks = hour_blocks.HourBlocks(group_refresh_s)
        self._hub = hub

    @grpc_errors
    async def ListEvents(self, request: pb.ListEventsRequest, context: Context) -> pb.ListEventsResponse:
        caller = _reader(context)
        requests.text(sensor_id=request.sensor_id, metric_type=request.metric_type)
        if caller is not None and request.sensor_id:
            caller.require_sensors([request.sensor_id])
        start, end = requests.time_range(
            request.HasField("start_time"), request.start_time, request.HasField("end_time"), request.end_time
        )
        size = paging.page_size(request.page_size, 100, 1_000)
        digest = paging.filters_digest(
            "events", request.sensor_id, request.metric_type, request.kind, start, end
        )
        position = paging.decode(request.page_token, digest, 2)
        conditions = ["reading_time >= $1", "reading_time < $2"]
        args: list[Any] = [start, end]
        for column, value in (("sensor_id", request.sensor_id), ("metric_type", request.metric_type),
                              ("kind", request.kind)):  # fmt: skip
            if value:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        if caller is not None and not caller.all_sensors and not request.sensor_id:
            args.append(list(caller.sensor_prefixes))
            conditions.append(f"sensor_id ^@ ANY(${len(args)}::text[])")
        if position is not None:
            args += [position[0], position[1]]
            conditions.append(f"(reading_time, event_id) < (${len(args) - 1}, ${len(args)}::uuid)")
        args.append(size + 1)
        query = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(conditions)}"  # noqa: S608 - columns are ours
            f" ORDER BY reading_time DESC, event_id DESC LIMIT ${len(args)}"
        )
        rows = await self._db.query(lambda pool: pool.fetch(query, *args))
        response = pb.ListEventsResponse(events=[_event(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = paging.encode(digest, last["reading_time"], str(last["event_id"]))
        return response

    @grpc_stream_errors
    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        caller = _reader(context)
        if caller is not None and request.sensor_id:
            caller.require_sensors([request.sensor_id])
        prefixes = caller.sensor_prefixes if caller is not None else ("",)
        where = Filter(request.sensor_id, request.metric_type, request.kind, prefixes)
        async with self._hub.subscribe(where) as watcher:
            # Headers now tell the client the subscription is live: events from here on reach it.
            await context.send_initial_metadata(())
            while True:
                yield pb.WatchEventsResponse(event=await watcher.next())

    @grpc_errors
    async def ListSensors(self, request: pb.ListSensorsRequest, context: Context) -> pb.ListSensorsResponse:
        caller = _reader(context)
        size = paging.page_size(request.page_size, 100, 1_000)
        digest = paging.filters_digest("sensors", request.sensor_id_prefix)
        position = paging.decode(request.page_token, digest, 1)
        prefix = visible_prefix(request.sensor_id_prefix, caller)
        if prefix is None or ID_PREFIX.fullmatch(prefix) is None:
            return pb.ListSensorsResponse()  # no sensor id the caller may see has such a prefix
        upper = postgres.prefix_upper_bound(prefix) if prefix else ID_CEILING
        allowed = None if caller is None or caller.all_sensors else list(caller.sensor_prefixes)
        after = position[0] if position else ""
        rows = await self._db.query(lambda pool: pool.fetch(SENSORS, after, prefix, upper, size + 1, allowed))
        sensors: list[sensor_pb2.Sensor] = []
        for row in rows:
            if not sensors or sensors[-1].sensor_id != row["sensor_id"]:
                sensors.append(sensor_pb2.Sensor(sensor_id=row["sensor_id"]))
            sensor = sensors[-1]
            metric = sensor.last_metrics.add(sensor_id=row["sensor_id"], metric_type=row["metric_type"],
                                             value=row["value"], unit=row["unit"] or "")  # fmt: skip
            metric.reading_time.FromMicroseconds(row["reading_time"])
            if row["reading_time"] > sensor.last_seen_time.ToMicroseconds():
                sensor.last_seen_time.FromMicroseconds(row["reading_time"])
        response = pb.ListSensorsResponse(sensors=sensors[:size])
        if len(sensors) > size:
            response.next_page_token = paging.encode(digest, sensors[size - 1].sensor_id)
        return response

    @grpc_errors
    async def AggregateSensors(
        self, request: pb.AggregateSensorsRequest, context: Context
    ) -> pb.AggregateSensorsResponse:
        caller = _reader(context)
        requests.required(metric_type=request.metric_type)
        requests.text(metric_type=request.metric_type)
        if ID_PREFIX.fullmatch(request.sensor_id_prefix) is None:
            raise InvalidArgument(
                [Violation("sensor_id_prefix", "must be the start of a sensor id: A-Z a-z 0-9 . _ : -")]
            )
        start, end = requests.time_range(
            request.HasField("start_time"), request.start_time, request.HasField("end_time"), request.end_time
        )
        width = request.bucket_width.ToMicroseconds() if request.HasField("bucket_width") else HOUR_US
        if width <= 0 or width % MINUTE_US:
            raise InvalidArgument([Violation("bucket_width", "must be a whole, positive number of minutes")])
        start, end = groups.widened(start, end, width)
        if width % HOUR_US and end - start > groups.MINUTE_RANGE_US:
            raise InvalidArgument([Violation(
                "bucket_width", "under an hour (or not whole hours) only for ranges of at most 6 hours: "
                "choose whole hours, or a shorter range",
            )])  # fmt: skip
        if (end - start) // width > MAX_BUCKETS:
            raise InvalidArgument(
                [
                    Violation(
                        "bucket_width", f"gives {(end - start) // width} buckets, more than {MAX_BUCKETS}"
                    )
                ]
            )
        if not 0 <= request.top_count <= MAX_TOP:
            raise InvalidArgument([Violation("top_count", f"must be 0 (10) to {MAX_TOP}")])
        stats = stats_pb2.GroupStats(
            sensor_id_prefix=request.sensor_id_prefix, metric_type=request.metric_type
        )
        stats.start_time.FromMicroseconds(start)
        stats.end_time.FromMicroseconds(end)
        prefix = visible_prefix(request.sensor_id_prefix, caller)
        if prefix is None:
            return pb.AggregateSensorsResponse(stats=stats)  # no sensor the caller may read is in it
        low, high = (prefix, postgres.prefix_upper_bound(prefix)) if prefix else ("", ID_CEILING)
        several = None if caller is None or caller.all_sensors else list(caller.sensor_prefixes)
        top = request.top_count or 10
        if width % HOUR_US == 0 and (several is None or len(several) == 1):
            # Whole hours of one range of ids: the kept hourly blocks (assessor/hour_blocks.py).
            hours = range(start, end, HOUR_US)
            blocks = await self._blocks.blocks(
                self._db.query, request.metric_type, hours, time.time_ns() // 1000
            )
            found = groups.from_totals(
                start, end, width, hour_blocks.aggregate(
                    blocks, self._blocks.names(request.metric_type), low, high, width // HOUR_US, top
                ),
            )  # fmt: skip
        else:
            found = await self._db.query(lambda pool: groups.aggregate(
                pool, low, high, request.metric_type, several, start, end, width, top,
            ))  # fmt: skip
        stats.sensor_count = found.sensors
        total = sum(b.sum for b in found.buckets if b.count)
        for bucket in found.buckets:
            out = stats.buckets.add(sensor_count=bucket.sensors, count=bucket.count)
            out.start_time.FromMicroseconds(bucket.start_us)
            if bucket.count:
                _set_present(out, min=bucket.min, max=bucket.max, mean=bucket.sum / bucket.count)
                stats.count += bucket.count
        if stats.count:
            stats.min = min(b.min for b in found.buckets if b.min is not None)
            stats.max = max(b.max for b in found.buckets if b.max is not None)
            stats.mean = total / stats.count
        stats.top_sensors.extend(
            stats_pb2.SensorSummary(sensor_id=t.sensor_id, count=t.count, mean=t.mean, min=t.min, max=t.max)
            for t in found.top
        )
        return pb.AggregateSensorsResponse(stats=stats)

    @grpc_errors
    async def GetSensorStats(
        self, request: pb.GetSensorStatsRequest, context: Context
    ) -> pb.GetSensorStatsResponse:
        _reader(context, request.sensor_id)
        requests.required(sensor_id=request.sensor_id, metric_type=request.metric_type)
        requests.text(sensor_id=request.sensor_id, metric_type=request.metric_type)
        start, end = requests.time_range(
            request.HasField("start_time"), request.start_time, request.HasField("end_time"), request.end_time
        )
        width = None
        if request.HasField("bucket_width"):
            width = request.bucket_width.ToMicroseconds()
            if width <= 0 or width % MINUTE_US:
                raise InvalidArgument(
                    [Violation("bucket_width", "must be a whole, positive number of minutes")]
                )
            if bucket_count(start, end, width) > MAX_BUCKETS:
                count = bucket_count(start, end, width)
                raise InvalidArgument(
                    [Violation("bucket_width", f"gives {count} buckets, more than {MAX_BUCKETS}")]
                )
        found = await self._db.query(
            lambda pool: sensor_stats(pool, request.sensor_id, request.metric_type, start, end, width)
        )
        stats = stats_pb2.SensorStats(sensor_id=request.sensor_id, metric_type=request.metric_type,
                               start_time=request.start_time, end_time=request.end_time,
                               count=found.aggregate.count)  # fmt: skip
        agg = found.aggregate
        _set_present(stats, min=agg.min, max=agg.max, mean=agg.mean, stddev=agg.stddev)
        if found.percentiles:
            stats.p50, stats.p95, stats.p99 = found.percentiles
        for reading, field in ((found.first, stats.first_reading), (found.last, stats.last_reading)):
            if reading is not None:
                field.CopyFrom(_metric(request.sensor_id, request.metric_type, reading))
        add = stats.buckets.add
        for bucket in found.buckets:  # up to a thousand: what takes least time with upb
            if bucket.count:
                out = add(count=bucket.count, min=bucket.min, max=bucket.max, mean=bucket.mean)
            else:
                out = add()
            out.start_time.seconds, micros = divmod(bucket.start_us, 1_000_000)
            out.start_time.nanos = micros * 1000
        if found.raw_from_us is not None:
            stats.raw_start_time.FromMicroseconds(found.raw_from_us)
        return pb.GetSensorStatsResponse(stats=stats)

    @grpc_errors
    async def ListReadings(
        self, request: pb.ListReadingsRequest, context: Context
    ) -> pb.ListReadingsResponse:
        _reader(context, request.sensor_id)
        requests.required(sensor_id=request.sensor_id)
        requests.text(sensor_id=request.sensor_id, metric_type=request.metric_type)
        start, end = requests.time_range(
            request.HasField("start_time"), request.start_time, request.HasField("end_time"), request.end_time
        )
        size = paging.page_size(request.page_size, 1_000, 10_000)
        digest = paging.filters_digest("readings", request.sensor_id, request.metric_type, start, end)
        position = paging.decode(request.page_token, digest, 2)
        after_time, after_type = position if position else (start - 1, "")

        async def read(pool: asyncpg.Pool) -> tuple[list[Row], int | None]:
            # The pool, not a connection of it: readings.window remembers attributes per pool.
            types = [request.metric_type] if request.metric_type else [
                r["metric_type"] for r in await pool.fetch(METRIC_TYPES, request.sensor_id)
            ]  # fmt: skip
            rows: list[Row] = []
            for metric_type in types:
                # After the page's last (time, type): this type's readings from that time on, or
                # after it when this type came before the last's.
                first = max(start, after_time + (0 if metric_type > after_type else 1))
                found = await readings.window(pool, request.sensor_id, metric_type, first, end, size + 1)
                rows += zip(
                    found.times.tolist(), [metric_type] * len(found), found.values.tolist(), found.units,
                    found.labels, strict=True,
                )  # fmt: skip
            rows.sort(key=lambda r: (r[0], r[1]))
            return rows[: size + 1], await horizons.raw_from(pool, types, start)

        rows, raw_from_us = await self._db.query(read)
        response = pb.ListReadingsResponse()
        if raw_from_us is not None:
            response.raw_start_time.FromMicroseconds(raw_from_us)
        for reading_time, metric_type, value, unit, labels in rows[:size]:
            metric = response.metrics.add(sensor_id=request.sensor_id, metric_type=metric_type,
                                          value=value, unit=unit or "")  # fmt: skip
            metric.reading_time.FromMicroseconds(reading_time)
            if labels:
                metric.labels.update(_labels(labels))
        if len(rows) > size:
            reading_time, metric_type, *_ = rows[size - 1]
            response.next_page_token = paging.encode(digest, reading_time, metric_type)
        return response

    @grpc_errors
    async def GetLegacyEvents(
        self, request: pb.GetLegacyEventsRequest, context: Context
    ) -> pb.GetLegacyEventsResponse:
        _reader(context, request.sensor_uuid, "sensor_uuid")
        requests.required(sensor_uuid=request.sensor_uuid)
        requests.text(sensor_uuid=request.sensor_uuid)
        rows = await self._db.query(
            lambda pool: pool.fetch(
                LEGACY_EVENTS,
                request.sensor_uuid,
                LEGACY_METRIC_TYPE,
                event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED,
            )
        )
        response = pb.GetLegacyEventsResponse(sensor_uuid=request.sensor_uuid)
        for row in rows:
            event = response.events.add(temperature=row["value"], kind=LEGACY_EVENT_TYPE)
            event.event_time.FromMicroseconds(row["reading_time"])
        return response

    @grpc_errors
    async def GetLegacyMeasurements(
        self, request: pb.GetLegacyMeasurementsRequest, context: Context
    ) -> pb.GetLegacyMeasurementsResponse:
        _reader(context, request.sensor_uuid, "sensor_uuid")
        requests.required(sensor_uuid=request.sensor_uuid)
        requests.text(sensor_uuid=request.sensor_uuid)
        now = time.time_ns() // 1000
        sensor = request.sensor_uuid
        hour, week, month = await self._db.query(
            lambda pool: asyncio.gather(
                range_aggregate(pool, sensor, LEGACY_METRIC_TYPE, now - HOUR_US, now + 1),
                range_aggregate(pool, sensor, LEGACY_METRIC_TYPE, now - 7 * DAY_US, now + 1),
                range_aggregate(pool, sensor, LEGACY_METRIC_TYPE, now - 30 * DAY_US, now + 1),
            )
        )
        response = pb.GetLegacyMeasurementsResponse(sensor_uuid=sensor)
        if hour.mean is not None:
            response.average_last_hour = hour.mean
        if week.mean is not None:
            response.average_last_7_days = week.mean
        if month.max is not None:
            response.max_last_30_days = month.max
        return response

    @grpc_errors
    async def ReadPrometheus(
        self, request: pb.ReadPrometheusRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        caller = _reader(context)
        read = remote_read.request_of(request.body.data)
        answer = await self._db.query(lambda pool: remote_read.answer(pool, read, caller, self._read_limits))
        return httpbody_pb2.HttpBody(content_type="application/x-protobuf", data=answer)


def _reader(context: Context, sensor_id: str | None = None, field: str = "sensor_id") -> Identity | None:
    """The caller, who must hold the read scope and cover `sensor_id` if given; None inside."""
    caller = caller_of(context.invocation_metadata(), "read")
    if caller is not None and sensor_id is not None:
        caller.require_sensors([sensor_id], field)
    return caller


def visible_prefix(requested: str, caller: Identity | None) -> str | None:
    """The sensor-id prefix to list: the request's, or the caller's one prefix when that is narrower;
    None when the two share no sensor. Several prefixes are applied as a filter of the scan."""
    if caller is None or caller.all_sensors or len(caller.sensor_prefixes) > 1:
        return requested
    (own,) = caller.sensor_prefixes
    if requested.startswith(own):
        return requested
    if own.startswith(requested):
        return own
    return None


def _set_present(message: Any, **fields: float | None) -> None:
    """Sets the optional fields that have a value; absent stays absent (no number for no readings)."""
    for name, value in fields.items():
        if value is not None:
            setattr(message, name, value)


def _event(row: asyncpg.Record) -> event_pb2.Event:
    event = event_pb2.Event(
        event_id=row["event_id"].hex, kind=row["kind"], sensor_id=row["sensor_id"],
        metric_type=row["metric_type"], value=row["value"], threshold=row["threshold"], count=row["count"],
        rule_id=row["rule_id"], severity=row["severity"], alarm_id=row["alarm_id"],
    )  # fmt: skip
    event.reading_time.FromMicroseconds(row["reading_time"])
    event.detect_time.FromMicroseconds(row["detect_time"])
    if row["alarm"] is not None:
        event.alarm.ParseFromString(row["alarm"])
    return event


def _metric(sensor_id: str, metric_type: str, reading: Reading) -> metric_pb2.Metric:
    metric = metric_pb2.Metric(
        sensor_id=sensor_id, metric_type=metric_type, value=reading.value, unit=reading.unit or ""
    )
    metric.reading_time.FromMicroseconds(reading.time_us)
    if reading.labels:
        metric.labels.update(_labels(reading.labels))
    return metric


def _labels(raw: str) -> dict[str, str]:
    import json  # noqa: PLC0415 - labels are rare; keep the common path free of it

    labels: dict[str, str] = json.loads(raw)
    return labels


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection back in the pool resets (asyncpg rolls back an open transaction first):
    nothing. The assessor sets no session state (no SET, LISTEN, advisory lock or open cursor), and
    asyncpg's default reset would cost a round trip per query: 9 of them per GetSensorStats."""


async def main(stop: asyncio.Event) -> None:
    config = settings.load(AssessorSettings, "assessor")
    setup_logging("assessor", config.log_level)
    log.info("starting: %s", settings.describe(config))

    async def connect(dsn: str, password: str, min_size: int = 1) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            dsn,
            password=password or None,
            min_size=min_size,
            max_size=config.postgres_pool_size,
            server_settings=SERVER_SETTINGS,
            init=postgres.setup_connection,
            reset=_keep_session,
            command_timeout=config.query_timeout_s,
            timeout=5,
        )

    pool: asyncpg.Pool | None = None
    replica: asyncpg.Pool | None = None
    server: GrpcServer | None = None
    following: asyncio.Task[None] | None = None
    hub = EventHub(config, config.watch_queue_size)
    try:
        pool = await retry_until_stopped(
            "PostgreSQL", lambda: connect(config.postgres_dsn, config.postgres_password), stop
        )
        if config.replica_dsn:
            # Connections made when a query needs one: a replica down at start only means queries go
            # to the primary until it answers.
            replica = await connect(config.replica_dsn, config.replica_password, min_size=0)
        db = Database(pool, replica, config.replica_max_lag_s)
        following = asyncio.create_task(db.follow(stop))
        hub.start()
        assessor = Assessor(
        db, hub, config.group_refresh_s,
        remote_read.Limits(config.remote_read_max_series, config.remote_read_max_samples),
    )  # fmt: skip
        server = GrpcServer(
            config.grpc_address,
            [SERVICE.full_name],
            [lambda s: add_servicer(s, SERVICE, assessor)],
            metrics_port=config.metrics_port,
            # Envoy sends it the reflection requests that name no service: see envoy/envoy.yaml.
            front_door_reflection=True,
        )
        await server.start()
        await server.set_serving()
        log.info("serving")
        await stop.wait()
    except Stopped:
        pass
    finally:
        # Watch streams never end by themselves: end them first, then drain the other calls.
        hub.end_all_for_shutdown()

        async def stop_following() -> None:
            if following is not None:
                following.cancel()

        closers = (hub.stop, stop_following, *(db.close for db in (replica, pool) if db is not None))
        await shut_down(server, config.shutdown_grace_s, *closers)
