"""Every service answers its gRPC health check, directly and through Envoy, and offers reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests import front_door
from tests.target import Target

SERVICES = ("receiver", "processor", "saver", "assessor", "notifier", "registry")
# Routed by Envoy; the others stay inside.
PUBLIC = ("receiver", "processor", "assessor", "notifier", "registry")  # the processor for its RulesService


async def check(address: str, service: str = "", header: str | None = None) -> int:
    metadata = (("x-metrics-service", header),) if header else None
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5, metadata=metadata
        )
    return reply.status


@pytest.mark.parametrize("name", SERVICES)
async def test_serving_directly(target: Target, name: str) -> None:
    assert await check(target.services[name]) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", PUBLIC)
async def test_serving_through_envoy(target: Target, name: str) -> None:
    assert await check(target.envoy, header=name) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", PUBLIC)
async def test_serving_through_the_tls_port_with_a_token(target: Target, name: str) -> None:
    async with front_door.channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5,
            metadata=(("x-metrics-service", name), *front_door.bearer(front_door.token(target))),
        )  # fmt: skip
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(PUBLIC)))
async def test_internal_services_are_not_routed_by_envoy(target: Target, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(target.envoy, header=name)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value  # Envoy: no route (404)


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("receiver", "metrics.v1.ReceiverService"),
        ("processor", "metrics.v1.RulesService"),
        ("assessor", "metrics.v1.AssessorService"),
        ("notifier", "metrics.v1.SubscriptionsService"),
        ("registry", "metrics.v1.DevicesService"),
    ],
)
async def test_serving_by_grpc_service_name(target: Target, name: str, service: str) -> None:
    assert await check(target.services[name], service) == health_pb2.HealthCheckResponse.SERVING


async def test_unknown_health_service_is_not_found(target: Target) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(target.services["receiver"], "metrics.v1.NoSuchService")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("receiver", "metrics.v1.ReceiverService"),
        ("assessor", "metrics.v1.AssessorService"),
        ("notifier", "metrics.v1.SubscriptionsService"),
        ("registry", "metrics.v1.DevicesService"),
    ],
)
async def test_reflection_lists_the_service_through_envoy(target: Target, name: str, service: str) -> None:
    async with grpc.aio.insecure_channel(target.envoy) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(metadata=(("x-metrics-service", name),), timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        replies = [reply async for reply in call]
    names = {s.name for s in replies[0].list_services_response.service}
    assert service in names
    assert "grpc.health.v1.Health" in names
