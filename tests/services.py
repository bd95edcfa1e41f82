"""Private instances of the services for crash tests: own topics, own consumer group, armed failpoints."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.kafka import client_options
from stack import settings as stack_settings
from stack.supervisor import Supervisor
from tests.helpers import eventually
from tests.target import Target

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Topics:
    metrics: str
    events: str
    dead_letters: str
    group: str


@asynccontextmanager
async def private_topics(target: Target, partitions: int = 2) -> AsyncIterator[Topics]:
    """Fresh topics and a consumer group name no other test or service uses; deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    topics = Topics(
        f"test-metrics-{suffix}", f"test-events-{suffix}", f"test-dlq-{suffix}", f"test-group-{suffix}"
    )
    admin = AIOKafkaAdminClient(**client_options(target.kafka()))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in (topics.metrics, topics.events)]
                                  + [NewTopic(topics.dead_letters, 1, 1)])  # fmt: skip
        yield topics
    finally:
        await admin.delete_topics([topics.metrics, topics.events, topics.dead_letters])
        await admin.close()


def service_env(
    target: Target, topics: Topics | None, service: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a private instance: the target's servers, and `topics` if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    prefix = f"METRICS_{service.upper()}_"
    env.update({
        "METRICS_KAFKA_BOOTSTRAP_SERVERS": target.kafka_bootstrap_servers,
        **target.service_credentials(service),
        prefix + "GRPC_PORT": "0",
        prefix + "METRICS_PORT": "0",  # the stack's own instance serves the default port
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
    })  # fmt: skip
    if service == "processor":
        env[prefix + "RULES_TOPIC"] = ""  # its configuration's rules (METRICS_PROCESSOR_RULES) only
    if topics is not None:
        env.update({
            "METRICS_METRICS_TOPIC": topics.metrics,
            "METRICS_EVENTS_TOPIC": topics.events,
            "METRICS_DEAD_LETTER_TOPIC": topics.dead_letters,
            prefix + "CONSUMER_GROUP": topics.group,
        })  # fmt: skip
    env.update(extra or {})
    return env


async def start_service(service: str, env: Mapping[str, str], log: Path) -> asyncio.subprocess.Process:
    """Runs `python -m <service>` from the checkout, its output appended to `log`."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            service,
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def stop_service(process: asyncio.subprocess.Process, timeout: float = 20.0) -> int:
    """SIGTERM, and the exit code once it has shut down (a clean stop is 0)."""
    if process.returncode is None:
        process.terminate()
    return await asyncio.wait_for(process.wait(), timeout)


def free_port() -> int:
    """A port nothing listens on now, for a private instance."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serving(channel: grpc.aio.Channel) -> None:
    """Waits until the service behind `channel` reports SERVING (gRPC health)."""

    async def check() -> None:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            raise AssertionError(exc.code()) from None
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    await eventually(check, timeout=60, what="the service serving")


@asynccontextmanager
async def in_place_of_the_stack_s(
    target: Target, service: str, extra: Mapping[str, str], log: Path, port: int | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    """The stack's `service` stopped and a private instance with the `extra` settings serving in its
    place: on the stack's port (what Envoy reaches), or on `port`; yields a channel to it. Afterwards
    the private one stops (cleanly, or the test fails with its log) and the stack's serves again."""
    address = target.services[service]
    own_port = port if port is not None else int(address.rpartition(":")[2])
    env = service_env(target, None, service, {f"METRICS_{service.upper()}_GRPC_PORT": str(own_port), **extra})
    with Supervisor(stack_settings.load()) as supervisor:
        supervisor.stop_process(service)
    process = await start_service(service, env, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{own_port}") as channel:
            await serving(channel)
            yield channel
    finally:
        code = await stop_service(process)
        with Supervisor(stack_settings.load()) as supervisor:
            supervisor.start_process(service)
        async with grpc.aio.insecure_channel(address) as channel:
            await serving(channel)
        assert code == 0, (await asyncio.to_thread(log.read_text))[-3000:]
