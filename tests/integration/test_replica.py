"""The assessor on a streaming replica of PostgreSQL: its queries go to the replica while it is up
and close behind, to the primary when it lags past the bound or is down, and back once it is fine."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from metrics.v1 import assessor_service_pb2
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from stack import credentials, prepare
from stack import settings as stack_settings
from tests.helpers import eventually, send
from tests.services import free_port, service_env, serving, start_service, stop_service
from tests.target import Target

pytestmark = pytest.mark.local_stack  # a base backup of the local stack's PostgreSQL

MAX_LAG_S = 1.0


@dataclass
class Replica:
    port: int
    socket_dir: Path
    process: asyncio.subprocess.Process

    async def superuser(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", database="metrics"
        )

    async def stop(self) -> None:
        """PostgreSQL's fast shutdown, sent to the server itself (runuser, its parent, passes no signal)."""
        if self.process.returncode is None:
            pid = int((self.socket_dir / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
            await asyncio.wait_for(self.process.wait(), 60)


@pytest.fixture
async def replica() -> AsyncIterator[Replica]:
    """A streaming replica of the stack's PostgreSQL (pg_basebackup -R), on a port of its own."""
    stack = stack_settings.load()
    user = prepare.run_as("postgres")
    home = Path(tempfile.mkdtemp(prefix="metrics-replica-"))
    prepare.own(home, user)
    as_server = ["runuser", "-u", user, "--"] if user else []
    backup = await asyncio.create_subprocess_exec(
        *as_server, str(stack.postgres_bin / "pg_basebackup"), "-h", str(stack.postgres_socket_dir),
        "-p", str(stack.postgres_port), "-U", "postgres", "-D", str(home / "data"), "-R", "-X", "stream",
        "-c", "fast", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, errors = await backup.communicate()
    assert backup.returncode == 0, errors.decode()
    port = free_port()
    with (home / "log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *as_server, str(stack.postgres_bin / "postgres"), "-D", str(home / "data"),
            "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}", "-c", f"unix_socket_directories={home}",
            "-c", "max_connections=200", stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    server = Replica(port, home, process)
    try:

        async def accepting() -> None:
            try:
                conn = await server.superuser()
            except (OSError, asyncpg.PostgresError) as error:
                log = (home / "log").read_text()[-1500:]
                raise AssertionError(f"the replica does not accept connections yet: {error}\n{log}") from None
            try:
                assert await conn.fetchval("SELECT pg_is_in_recovery()")
            finally:
                await conn.close()

        await eventually(accepting, timeout=60, what="the replica accepting connections")
        yield server
    finally:
        await server.stop()
        shutil.rmtree(home, ignore_errors=True)


async def readings_of(channel: grpc.aio.Channel, sensor_id: str) -> list[float]:
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromSeconds(int(time.time()) - 3600)
    end.FromSeconds(int(time.time()) + 3600)
    reply = await AssessorServiceStub(channel).ListReadings(
        assessor_service_pb2.ListReadingsRequest(sensor_id=sensor_id, start_time=start, end_time=end),
        timeout=10,
    )
    return [m.value for m in reply.metrics]


async def test_queries_go_to_the_replica_and_to_the_primary_when_it_lags_or_is_down(
    target: Target, replica: Replica, db: asyncpg.Pool, sensor_id: str, tmp_path: Path
) -> None:
    port = free_port()
    dsn = target.postgres_dsn_of(credentials.POSTGRES_READER).replace(
        f":{stack_settings.load().postgres_port}/", f":{replica.port}/"
    )
    env = service_env(target, None, "assessor", {
        "METRICS_ASSESSOR_GRPC_PORT": str(port),
        "METRICS_ASSESSOR_REPLICA_DSN": dsn,
        "METRICS_ASSESSOR_REPLICA_PASSWORD_FILE": str(target.password_file(credentials.POSTGRES_READER)),
        "METRICS_ASSESSOR_REPLICA_MAX_LAG_S": str(MAX_LAG_S),
    })  # fmt: skip
    log = tmp_path / "assessor.log"
    assessor = await start_service("assessor", env, log)
    superuser = await replica.superuser()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)

            async def on(where: str, times: int = 1) -> None:
                assert log.read_text().count(f"queries go to the {where}") >= times, log.read_text()[-2000:]

            # Up and caught up: the queries go to the replica, as its own sessions show.
            await eventually(lambda: on("replica"), timeout=10, what="the assessor on the replica")
            await send(target.envoy_url, sensor_id, "temperature", 1.0)

            async def answered(values: list[float]) -> None:
                assert await readings_of(channel, sensor_id) == values

            await eventually(lambda: answered([1.0]), timeout=10, what="the reading, from the replica")
            sessions = await superuser.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'assessor' AND usename = $1",
                credentials.POSTGRES_READER.user,
            )
            assert sessions > 0, "the assessor's queries did not go to the replica"

            # Replay paused: the replica falls behind the primary's writes, past the bound.
            await superuser.execute("SELECT pg_wal_replay_pause()")
            await send(target.envoy_url, sensor_id, "temperature", 2.0)
            await eventually(lambda: on("primary"), timeout=15, what="the assessor on the primary")
            await eventually(
                lambda: answered([1.0, 2.0]), timeout=10, what="the new reading, from the primary"
            )
            replicated = await superuser.fetchval(
                "SELECT count(*) FROM readings WHERE sensor_id = $1", sensor_id
            )
            assert replicated == 1, "the replica had the new reading: it was not behind"

            # Replay resumed: back to the replica.
            await superuser.execute("SELECT pg_wal_replay_resume()")
            await eventually(lambda: on("replica", 2), timeout=15, what="the assessor back on the replica")

            # The replica down: queries go on, on the primary.
            await superuser.close()
            await replica.stop()
            await eventually(lambda: on("primary", 2), timeout=15, what="the assessor on the primary again")
            await eventually(
                lambda: answered([1.0, 2.0]), timeout=10, what="queries answered without the replica"
            )
            assert "the replica does not answer" in log.read_text()
    finally:
        if not superuser.is_closed():
            await superuser.close()
        assert await stop_service(assessor) == 0, log.read_text()[-3000:]
