"""Fixtures. Tests under tests/integration run against a deployment (tests/target.py); the rest need none."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import asyncpg
import grpc
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from metrics.v1 import assessor_service_pb2_grpc, receiver_service_pb2_grpc
from runtime import postgres
from stack import credentials
from testkit.http import http
from tests.target import Target, load

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """After an integration test fails, stops the run if the local stack is not healthy (a part down,
    the disk full): every later test would fail for the same reason, each only after its timeout."""
    if not report.failed or not report.nodeid.startswith("tests/integration/") or not load().local_stack:
        return
    deadline = time.monotonic() + 30  # a part a fault test killed comes back well within this
    while True:
        status = subprocess.run(
            [sys.executable, "-m", "stack", "status"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if status.returncode == 0:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    pytest.exit(
        f"stopping: the local stack is not healthy after {report.nodeid} failed, so every later test "
        f"would fail too (its logs: .stack/logs, make logs):\n{status.stdout}{status.stderr}",
        returncode=1,
    )


@pytest.fixture(scope="session")
def target() -> Target:
    return load()


@pytest.fixture
def sensor_id() -> str:
    """A sensor no other test uses."""
    return f"test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
async def envoy_channel(target: Target) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(target.envoy) as channel:
        yield channel


@pytest.fixture(scope="session")
def receiver(envoy_channel: grpc.aio.Channel) -> receiver_service_pb2_grpc.ReceiverServiceStub:
    """The receiver, over native gRPC through Envoy."""
    return receiver_service_pb2_grpc.ReceiverServiceStub(envoy_channel)


@pytest.fixture(scope="session")
def assessor(envoy_channel: grpc.aio.Channel) -> assessor_service_pb2_grpc.AssessorServiceStub:
    """The assessor, over native gRPC through Envoy."""
    return assessor_service_pb2_grpc.AssessorServiceStub(envoy_channel)


@pytest.fixture(scope="session")
async def db(target: Target) -> AsyncIterator[asyncpg.Pool]:
    """PostgreSQL of the deployment; times as integer microseconds since 1970 (runtime.postgres)."""
    pool = await asyncpg.create_pool(
        target.postgres_dsn, password=target.password(credentials.POSTGRES_READER), min_size=1, max_size=4,
        init=postgres.setup_connection,
        server_settings=postgres.SERVER_SETTINGS,
    )  # fmt: skip
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def redis_client(target: Target) -> AsyncIterator[aioredis.Redis]:
    # Fault tests restart Redis under this client: it reconnects and retries instead of failing.
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=30)
    password = target.password(credentials.REDIS_ADMIN)
    if target.redis_cluster:
        # The cluster client has the same commands; it follows the slots to the node serving them.
        cluster = aioredis.RedisCluster.from_url(target.redis_url, password=password, retry=retry)
        yield cast(aioredis.Redis, cluster)
        await cluster.aclose()
        return
    client = aioredis.Redis.from_url(
        target.redis_url,
        password=password,
        retry=retry,
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def clients_built() -> None:
    """`make clients` (the example clients and the load generator, clients/): incremental, so it
    only rebuilds what changed (protos/ included)."""
    # A nested make must not take over the jobserver or flags of a `make test` that runs this.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    result = subprocess.run(
        ["make", "--no-print-directory", "clients"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=840, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"make clients failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture
async def rules(target: Target) -> AsyncIterator[Callable[..., Awaitable[dict[str, Any]]]]:
    """Creates rules through Envoy (fields as JSON names them); deletes them after the test (a
    left-over rule would look at sensors no other test uses, but costs every processor a little)."""
    made: list[str] = []

    async def create(**fields: Any) -> dict[str, Any]:
        status, body = await http("POST", f"{target.envoy_url}/v1/rules", fields)
        assert status == 200, body
        made.append(body["ruleId"])
        return body  # type: ignore[no-any-return]

    yield create
    for rule_id in made:
        await http("DELETE", f"{target.envoy_url}/v1/rules/{rule_id}")
