"""The assessor's gRPC service and its process: queries over the stored readings and events."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import grpc

from assessor.aggregates import range_aggregate
from assessor.settings import AssessorSettings
from metrics.v1 import assessor_service_pb2 as pb
from metrics.v1 import assessor_service_pb2_grpc, event_pb2
from runtime import postgres, settings
from runtime.errors import grpc_errors
from runtime.grpc_server import GrpcServer
from runtime.lifecycle import Stopped, retry_until_stopped
from runtime.logging import setup_logging

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AssessorService"].full_name
LEGACY_METRIC_TYPE = "temperature"
LEGACY_EVENT_TYPE = "TEMPERATURE_EXCEEDED"
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

Context = grpc.aio.ServicerContext[Any, Any]

LEGACY_EVENTS = """
SELECT value, reading_time FROM events
WHERE sensor_id = $1 AND metric_type = $2 AND kind = $3
ORDER BY reading_time, event_id
"""


class Assessor(assessor_service_pb2_grpc.AssessorServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @grpc_errors
    async def GetLegacyEvents(
        self, request: pb.GetLegacyEventsRequest, context: Context
    ) -> pb.GetLegacyEventsResponse:
        rows = await self._pool.fetch(
            LEGACY_EVENTS, request.sensor_uuid, LEGACY_METRIC_TYPE, event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
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
        now = time.time_ns() // 1000
        sensor = request.sensor_uuid
        hour, week, month = await asyncio.gather(
            range_aggregate(self._pool, sensor, LEGACY_METRIC_TYPE, now - HOUR_US, now + 1),
            range_aggregate(self._pool, sensor, LEGACY_METRIC_TYPE, now - 7 * DAY_US, now + 1),
            range_aggregate(self._pool, sensor, LEGACY_METRIC_TYPE, now - 30 * DAY_US, now + 1),
        )
        response = pb.GetLegacyMeasurementsResponse(sensor_uuid=sensor)
        if hour.mean is not None:
            response.average_last_hour = hour.mean
        if week.mean is not None:
            response.average_last_7_days = week.mean
        if month.max is not None:
            response.max_last_30_days = month.max
        return response


async def main(stop: asyncio.Event) -> None:
    config = settings.load(AssessorSettings, "assessor")
    setup_logging("assessor", config.log_level)
    log.info("starting: %s", settings.describe(config))

    async def connect() -> asyncpg.Pool:
        return await asyncpg.create_pool(
            config.postgres_dsn,
            min_size=1,
            max_size=config.postgres_pool_size,
            server_settings=postgres.SERVER_SETTINGS,
            init=postgres.setup_connection,
            command_timeout=config.query_timeout_s,
            timeout=5,
        )

    pool: asyncpg.Pool | None = None
    server: GrpcServer | None = None
    try:
        pool = await retry_until_stopped("PostgreSQL", connect, stop)
        # ListEvents, GetSensorStats, ListSensors, ListReadings and WatchEvents answer UNIMPLEMENTED
        # until they are written.
        assessor = Assessor(pool)  # type: ignore[abstract]
        server = GrpcServer(
            config.grpc_address,
            [SERVICE_NAME],
            [lambda s: assessor_service_pb2_grpc.add_AssessorServiceServicer_to_server(assessor, s)],
        )
        await server.start()
        await server.set_serving()
        log.info("serving")
        await stop.wait()
    except Stopped:
        pass
    finally:
        log.info("stopping")
        if server is not None:
            await server.stop(config.shutdown_grace_s)
        if pool is not None:
            await pool.close()
        log.info("stopped")
