"""Errors that say what happened: a query past its time limit is DEADLINE_EXCEEDED (HTTP 504), a
database that is down is UNAVAILABLE (HTTP 503) with a retry hint. Neither is a bug (INTERNAL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from metrics.v1 import assessor_service_pb2
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from stack import access, credentials
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from testkit.http import http
from tests.helpers import eventually
from tests.services import free_port, service_env, start_service, stop_service
from tests.target import Target

pytestmark = pytest.mark.local_stack


def list_events(sensor: str) -> assessor_service_pb2.ListEventsRequest:
    request = assessor_service_pb2.ListEventsRequest(sensor_id=sensor)
    request.start_time.FromSeconds(1_767_225_600)  # 2026-01-01, a year
    request.end_time.FromSeconds(1_798_761_600)
    return request


async def test_a_query_past_its_time_limit_is_deadline_exceeded(
    target: Target, sensor_id: str, tmp_path: Path
) -> None:
    port = free_port()
    env = service_env(target, None, "assessor", {
        "METRICS_ASSESSOR_GRPC_PORT": str(port), "METRICS_ASSESSOR_QUERY_TIMEOUT_S": "0.5",
    })  # fmt: skip
    assessor = await start_service("assessor", env, tmp_path / "assessor.log")
    # The table the query reads is locked by a transaction that does not end: the query waits.
    owner = await access.postgres(stack_settings.load(), credentials.POSTGRES_OWNER)
    lock = owner.transaction()
    await lock.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)

            async def serving() -> None:
                await AssessorServiceStub(channel).ListEvents(list_events(sensor_id), timeout=10)

            await eventually(serving, timeout=30, what="the assessor answers")  # before the lock
            await owner.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await AssessorServiceStub(channel).ListEvents(list_events(sensor_id), timeout=10)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.value.details()
        assert "time limit" in (error.value.details() or "")
    finally:
        await lock.rollback()
        await owner.close()
        assert await stop_service(assessor) == 0, (tmp_path / "assessor.log").read_text()[-2000:]


async def test_a_database_that_is_down_is_unavailable_with_a_retry_hint(
    target: Target, sensor_id: str
) -> None:
    url = f"{target.envoy_url}/v1/events?sensorId={sensor_id}&startTime=2026-01-01T00:00:00Z&endTime=2027-01-01T00:00:00Z"
    with Supervisor(stack_settings.load()) as supervisor:
        supervisor.stop_process("postgres")
        try:
            async with grpc.aio.insecure_channel(target.envoy) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await AssessorServiceStub(channel).ListEvents(list_events(sensor_id), timeout=20)
            status, body = await http("GET", url)
        finally:
            supervisor.start_process("postgres")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
    assert "database is not reachable" in (error.value.details() or "")
    details = rpc_status.from_call(error.value)
    assert details is not None
    retry = error_details_pb2.RetryInfo()
    assert details.details[0].Unpack(retry) and retry.retry_delay.seconds == 1
    assert status == 503, body
    assert "database is not reachable" in body["message"]

    async def answers_again() -> None:
        status, body = await http("GET", url)
        assert status == 200, body

    await eventually(answers_again, timeout=60, what="queries answered once PostgreSQL is back")
