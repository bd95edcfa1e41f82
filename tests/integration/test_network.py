"""A sick network between the services and their servers (make test-network). Toxiproxy stands
between the receiver, processor and saver and Kafka (the broker's proxied listener), Redis and
PostgreSQL; private instances of the three, started on the stack's ports in place of its own, reach
the servers only through it. Under the fault tests' load (tests/faults.py) each case adds latency,
resets connections or cuts them for a while, then heals, and the promises hold: a batch is
acknowledged only once durable, nothing acknowledged is lost or doubled (readings, events, alarms,
Redis counters: the rules model's), clients see only retryable errors. Each case prints what
throughput the clients kept while the network was sick."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import time
import urllib.error
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis

from stack import service_env
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from stack.system import TOXIPROXY
from testkit.http import http
from tests.faults import Load, during_load, healthy
from tests.helpers import eventually
from tests.services import ROOT, free_port, serving, start_service, stop_service
from tests.target import Target

pytestmark = [pytest.mark.network, pytest.mark.local_stack]

SETTINGS = stack_settings.load()
SERVICES = ("receiver", "processor", "saver")
SICK_S = 10  # how long each case keeps the network sick


@dataclasses.dataclass
class Toxiproxy:
    api: str
    # The private services' logs, by name (filled by the `sick` fixture).
    logs: dict[str, Path] = dataclasses.field(default_factory=dict)

    def logged(self, service: str, text: str) -> bool:
        return text in self.logs[service].read_text(errors="replace")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await http(method, f"{self.api}{path}", body)
        assert status in (200, 201, 204), (method, path, status, answer)
        return answer

    async def proxy(self, name: str, listen: int, upstream: int) -> None:
        await self.call("POST", "/proxies", {
            "name": name, "listen": f"127.0.0.1:{listen}", "upstream": f"127.0.0.1:{upstream}", "enabled": True,
        })  # fmt: skip

    async def toxic(self, proxy: str, kind: str, toxicity: float = 1.0, **attributes: int) -> None:
        """The toxic on both directions of the proxy's connections."""
        for stream in ("upstream", "downstream"):
            await self.call("POST", f"/proxies/{proxy}/toxics", {
                "name": f"{kind}-{stream}", "type": kind, "stream": stream, "toxicity": toxicity,
                "attributes": attributes,
            })  # fmt: skip

    async def enabled(self, proxy: str, enabled: bool) -> None:
        """A disabled proxy closes its connections and refuses new ones: the server is cut off."""
        await self.call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    async def heal(self) -> None:
        """Every proxy enabled again, without toxics."""
        await self.call("POST", "/reset")


@pytest.fixture
async def toxiproxy(tmp_path: Path) -> AsyncIterator[Toxiproxy]:
    assert TOXIPROXY.exists(), "Toxiproxy is missing: make test-network builds it (python -m stack toxiproxy)"
    port = free_port()
    with (tmp_path / "toxiproxy.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            str(TOXIPROXY), "-host", "127.0.0.1", "-port", str(port), stdout=log, stderr=subprocess.STDOUT
        )
    proxy = Toxiproxy(f"http://127.0.0.1:{port}")

    async def answers() -> None:
        try:
            await proxy.call("GET", "/version")
        except urllib.error.URLError as error:
            raise AssertionError(f"Toxiproxy's API does not answer yet: {error}") from None

    try:
        await eventually(answers, timeout=20, what="Toxiproxy's API")
        yield proxy
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture
async def sick(toxiproxy: Toxiproxy, tmp_path: Path) -> AsyncIterator[Toxiproxy]:
    """The stack's receiver, processor and saver replaced by instances that reach Kafka, Redis and
    PostgreSQL only through Toxiproxy; the stack's own serve again afterwards."""
    (broker,) = SETTINGS.kafka_brokers
    redis_port, postgres_port = free_port(), free_port()
    await toxiproxy.proxy("kafka", broker.proxy_port, broker.proxied_port)
    await toxiproxy.proxy("redis", redis_port, SETTINGS.redis_port)
    await toxiproxy.proxy("postgres", postgres_port, SETTINGS.postgres_port)
    through = dataclasses.replace(
        service_env.local(SETTINGS),
        kafka=f"127.0.0.1:{broker.proxy_port}", redis=f"127.0.0.1:{redis_port}",
        postgres=f"127.0.0.1:{postgres_port}",
    )  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    base["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'gen'}"
    processes: dict[str, asyncio.subprocess.Process] = {}
    with Supervisor(SETTINGS) as supervisor:
        for name in SERVICES:
            supervisor.stop_process(name)
    try:
        for name in SERVICES:
            (instance,) = SETTINGS.instances(name)
            env = {**base, **service_env.service_env(name, through, instance)}
            toxiproxy.logs[name] = tmp_path / f"{name}.log"
            processes[name] = await start_service(name, env, toxiproxy.logs[name])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{instance.grpc_port}") as channel:
                await serving(channel)
        for name in SERVICES:
            await healthy(name)  # and, for the public ones, through Envoy
        yield toxiproxy
    finally:
        await toxiproxy.heal()
        codes = {name: await stop_service(process) for name, process in processes.items()}
        with Supervisor(SETTINGS) as supervisor:
            for name in SERVICES:
                supervisor.start_process(name)
        for name in SERVICES:
            await eventually(lambda name=name: healthy(name), timeout=120, what=f"the stack's {name}")
        logs = {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n, c in codes.items() if c != 0}
        assert not logs, f"a private service did not stop cleanly: {logs}"


async def sick_for(
    target: Target,
    db: asyncpg.Pool,
    redis_client: aioredis.Redis,
    what: str,
    make_sick: Callable[[], Awaitable[None]],
    heal: Callable[[], Awaitable[None]],
) -> tuple[Load, float]:
    """The load, the network sick for SICK_S in the middle of it, then healed; checked afterwards.
    Returns the load and the batches acknowledged a second while the network was sick."""
    finished = asyncio.Event()
    load = Load(batches=5_000, until=finished)
    rates: list[float] = []

    async def fault() -> None:
        began, acked = time.monotonic(), load.acked
        await asyncio.sleep(2)  # a stretch of healthy load to compare with, not a wait for something
        rates.append((load.acked - acked) / (time.monotonic() - began))
        began, acked = time.monotonic(), load.acked
        await make_sick()
        try:
            await asyncio.sleep(SICK_S)  # the length of the fault, not a wait for something
        finally:
            await heal()
        rates.append((load.acked - acked) / (time.monotonic() - began))
        began, acked = time.monotonic(), load.acked

        async def caught_up() -> None:
            assert load.acked - acked >= 2 * load.sensors, "the load has not resumed"

        await eventually(caught_up, timeout=60, what="acknowledgements after the network healed")
        await asyncio.sleep(2)
        rates.append((load.acked - acked) / (time.monotonic() - began))
        finished.set()

    await during_load(target, db, redis_client, fault, load)
    before, during, after = rates
    print(
        f"{what}: batches acknowledged/s before {before:.1f}, sick {during:.1f}, after {after:.1f}; "
        f"refused calls: {load.statuses or 'none'}; longest wait {load.longest_ack_s:.1f} s"
    )
    return load, during


def cut(sick: Toxiproxy, proxy: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Cutting the proxy's server off, and healing it."""
    return lambda: sick.enabled(proxy, False), lambda: sick.enabled(proxy, True)


async def test_kafka_200_ms_away(
    sick: Toxiproxy, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    _, during = await sick_for(
        target, db, redis_client, "Kafka 200 ms (±50) away",
        lambda: sick.toxic("kafka", "latency", latency=200, jitter=50), sick.heal,
    )  # fmt: skip
    assert during > 0, "no batch acknowledged while Kafka was slow"


async def test_kafka_cut_off(
    sick: Toxiproxy, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # Nothing can be durable while the broker is unreachable: batches are refused (UNAVAILABLE)
    # or wait, and are sent again; none acknowledged is lost.
    load, _ = await sick_for(target, db, redis_client, "Kafka cut off", *cut(sick, "kafka"))
    assert load.statuses.get("UNAVAILABLE"), "no batch was refused while Kafka was cut off"


async def test_redis_slow_then_cut_off(
    sick: Toxiproxy, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # The processor's counters are in Redis: it waits and retries; ingest does not need Redis.
    async def make_sick() -> None:
        await sick.toxic("redis", "latency", latency=100, jitter=20)
        await asyncio.sleep(SICK_S / 2)  # the slow half of the fault, then the cut
        await sick.enabled("redis", False)

    _, during = await sick_for(
        target, db, redis_client, "Redis 100 ms away, then cut off", make_sick, sick.heal
    )
    assert during > 0, "ingest stopped while Redis was sick"
    assert sick.logged("processor", "round failed, reading it again"), "the processor did not meet the cut"


async def test_postgres_cut_off(
    sick: Toxiproxy, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # The saver waits and retries; Kafka holds the readings meanwhile; ingest does not need it.
    _, during = await sick_for(target, db, redis_client, "PostgreSQL cut off", *cut(sick, "postgres"))
    assert during > 0, "ingest stopped while PostgreSQL was cut off"
    assert sick.logged("saver", "round failed, reading it again"), "the saver did not meet the cut"


async def test_connections_reset_at_random(
    sick: Toxiproxy, target: Target, db: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # A lossy link: a third of the connections to each server reset after 500 ms of data.
    async def make_sick() -> None:
        for proxy in ("kafka", "redis", "postgres"):
            await sick.toxic(proxy, "reset_peer", toxicity=0.33, timeout=500)

    await sick_for(target, db, redis_client, "a third of connections reset", make_sick, sick.heal)
    assert any(sick.logged(s, "Connection at 127.0.0.1") for s in SERVICES), "no Kafka connection was reset"
