"""Several instances of a service behind one Envoy: calls are spread over them, and when one is
killed, queries go on without an error (Envoy tries an idempotent call again on another instance,
ejects the dead one and its health check keeps it out)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.error
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from metrics.v1 import assessor_service_pb2
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from stack import certs, envoy_config, tokens
from stack import settings as stack_settings
from stack.settings import PUBLIC_SERVICES
from testkit.http import http_bytes
from tests.helpers import eventually
from tests.services import free_port, service_env, serving, start_service, stop_service
from tests.target import Target

pytestmark = pytest.mark.local_stack  # it renders the local stack's Envoy with a second assessor

ROOT = Path(__file__).resolve().parents[2]
ENVOY = Path(sys.executable).parent / "envoy"


@pytest.fixture
async def second_assessor(
    target: Target, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """A second assessor on a port of its own, next to the stack's."""
    port = free_port()
    env = service_env(target, None, "assessor", {"METRICS_ASSESSOR_GRPC_PORT": str(port)})
    process = await start_service("assessor", env, tmp_path / "assessor.log")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await serving(channel)
        yield process, port
    finally:
        if process.returncode is None:
            await stop_service(process)


@pytest.fixture
async def front_door(
    second_assessor: tuple[asyncio.subprocess.Process, int], tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """An Envoy of the test's own, as the stack renders it, but with both assessors behind it:
    (its plain-text address, its admin address)."""
    settings = stack_settings.load()
    local = "127.0.0.1"
    plaintext, tls, admin = free_port(), free_port(), free_port()
    upstreams = {name: [(local, getattr(settings, f"{name}_grpc_port"))] for name in PUBLIC_SERVICES}
    upstreams["assessor"].append((local, second_assessor[1]))
    tls_files = certs.ensure(settings)
    config = tmp_path / "envoy.yaml"
    config.write_text(
        envoy_config.render(
            tls=(local, tls), plaintext=(local, plaintext), admin=(local, admin), upstreams=upstreams,
            descriptor=ROOT / "gen" / "metrics.binpb", certificate=tls_files.certificate,
            private_key=tls_files.private_key, jwt_authn=tokens.ensure_jwt_authn(settings), client_ca=None,
        )
    )  # fmt: skip
    with (tmp_path / "envoy.log").open("ab") as log:
        envoy = await asyncio.create_subprocess_exec(
            str(ENVOY), "-c", str(config), "--disable-hot-restart", "--log-level", "warn",
            "--base-id", str(os.getpid() % 60_000 + 1_000), stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:

        async def healthy() -> None:
            try:
                page = await clusters(f"{local}:{admin}")
            except urllib.error.URLError as error:
                raise AssertionError(f"Envoy's admin does not answer yet: {error}") from None
            hosts = [line for line in page.splitlines() if "::health_flags::" in line]
            assert len([h for h in hosts if h.startswith("assessor::")]) == 2, hosts
            assert all(h.endswith("::healthy") for h in hosts), hosts

        await eventually(healthy, timeout=30, what="the test's Envoy with both assessors healthy")
        yield f"{local}:{plaintext}", f"{local}:{admin}"
    finally:
        envoy.send_signal(signal.SIGTERM)
        await asyncio.wait_for(envoy.wait(), 30)


async def test_queries_go_on_when_one_of_two_assessors_is_killed(
    second_assessor: tuple[asyncio.subprocess.Process, int], front_door: tuple[str, str]
) -> None:
    door, admin = front_door
    process, port = second_assessor
    failures: list[str] = []
    answered = 0
    killed_at: float | None = None

    async def query_for(seconds: float) -> None:
        nonlocal answered
        until = time.monotonic() + seconds
        async with grpc.aio.insecure_channel(door) as channel:
            stub = AssessorServiceStub(channel)
            while time.monotonic() < until:
                try:
                    await stub.ListSensors(assessor_service_pb2.ListSensorsRequest(page_size=1), timeout=10)
                    answered += 1
                except grpc.aio.AioRpcError as error:
                    failures.append(f"{error.code().name}: {error.details()}")

    async def kill_after(seconds: float) -> None:
        nonlocal killed_at
        await asyncio.sleep(seconds)  # calls flow to both instances first (checked below)
        served = await requests_by_instance(admin)
        assert served.get(port, 0) > 0 and len(served) == 2, served
        process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

    await asyncio.gather(query_for(6.0), kill_after(2.0))
    assert killed_at is not None and await process.wait() == -9
    assert failures == [], f"{len(failures)} of {answered + len(failures)} queries failed: {failures[:3]}"
    flags = [
        line
        for line in (await clusters(admin)).splitlines()
        if f"assessor::127.0.0.1:{port}::health_flags" in line
    ]
    assert flags and ("failed_active_hc" in flags[0] or "failed_outlier_check" in flags[0]), flags
    print(f"{answered} queries answered, none failed; the killed instance: {flags[0].rpartition('::')[2]}")


async def clusters(admin: str) -> str:
    """Envoy's admin page of its clusters' hosts (one `cluster::host:port::stat::value` a line)."""
    status, _, body = await asyncio.to_thread(http_bytes, "GET", f"http://{admin}/clusters")
    assert status == 200
    return body.decode()


async def requests_by_instance(admin: str) -> dict[int, int]:
    """The calls each assessor instance has had, by its port."""
    served = {}
    for line in (await clusters(admin)).splitlines():
        if line.startswith("assessor::") and "::rq_total::" in line:
            address, _, count = line.removeprefix("assessor::").partition("::rq_total::")
            served[int(address.rpartition(":")[2])] = int(count)
    return served
