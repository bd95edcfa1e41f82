"""gRPC reflection at the front door: a client with no proto files lists the public services through
Envoy, describes them and their messages, and calls them, as grpcurl does; internal services stay
unlisted. Each service's own port still describes that service alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests import front_door
from tests.target import Target

REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
# What the front door serves: the public API and reflection itself (health is per service, by the
# x-metrics-service header).
FRONT_DOOR = {
    "metrics.v1.ReceiverService",
    "metrics.v1.AssessorService",
    "metrics.v1.RulesService",
    "metrics.v1.AlarmsService",
    "metrics.v1.SubscriptionsService",
    "metrics.v1.DevicesService",
    REFLECTION,
}


@contextmanager
def plaintext(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as channel:
        yield channel


@contextmanager
def tls(target: Target) -> Iterator[grpc.Channel]:
    """The TLS port, a token with every call (reflection needs one there like any call)."""
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(front_door.ca_file(target).read_bytes()),
        grpc.access_token_call_credentials(front_door.token(target, scopes=("read",))),
    )
    with grpc.secure_channel(target.envoy_tls, credentials) as channel:
        yield channel


def listed(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    (reply,) = stub.ServerReflectionInfo(requests, metadata=metadata, timeout=5)
    return {service.name for service in reply.list_services_response.service}


def files_of_symbol(channel: grpc.Channel, symbol: str) -> list[str]:
    """The names of the files the server sends for `symbol`: its own first, then its imports."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)])
    (reply,) = stub.ServerReflectionInfo(requests, timeout=5)
    assert not reply.HasField("error_response"), reply.error_response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(data).name
        for data in reply.file_descriptor_response.file_descriptor_proto
    ]


def pool_of(channel: grpc.Channel) -> descriptor_pool.DescriptorPool:
    """A descriptor pool filled over reflection only: what grpcurl knows without proto files."""
    return descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))


def test_the_front_door_lists_the_public_services_and_only_those(target: Target) -> None:
    with plaintext(target.envoy) as channel:
        assert listed(channel) == FRONT_DOOR


def test_the_tls_port_lists_them_to_a_token(target: Target) -> None:
    with tls(target) as channel:
        assert listed(channel) == FRONT_DOOR


def test_the_tls_port_lists_nothing_without_a_token(target: Target) -> None:
    credentials = grpc.ssl_channel_credentials(front_door.ca_file(target).read_bytes())
    with grpc.secure_channel(target.envoy_tls, credentials) as channel, pytest.raises(grpc.RpcError) as error:
        listed(channel)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "services"),
    [
        ("receiver", {"metrics.v1.ReceiverService"}),
        ("processor", {"metrics.v1.RulesService", "metrics.v1.AlarmsService"}),
        ("assessor", {"metrics.v1.AssessorService"}),
        ("notifier", {"metrics.v1.SubscriptionsService"}),
        ("registry", {"metrics.v1.DevicesService"}),
    ],
)
def test_a_service_named_by_the_header_lists_itself_with_health(
    target: Target, name: str, services: set[str]
) -> None:
    with plaintext(target.envoy) as channel:
        names = listed(channel, (("x-metrics-service", name),))
    assert names == {*services, "grpc.health.v1.Health", REFLECTION}


@pytest.mark.parametrize("name", ["saver"])
def test_internal_services_are_not_reached_by_reflection(target: Target, name: str) -> None:
    with plaintext(target.envoy) as channel, pytest.raises(grpc.RpcError) as error:
        listed(channel, (("x-metrics-service", name),))
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]  # no route


def test_the_assessors_own_port_lists_its_own_service_only(target: Target) -> None:
    with plaintext(target.services["assessor"]) as channel:
        assert listed(channel) == {"metrics.v1.AssessorService", "grpc.health.v1.Health", REFLECTION}


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "tls"])
def test_the_front_door_describes_both_services_and_their_messages(target: Target, secure: bool) -> None:
    with tls(target) if secure else plaintext(target.envoy) as channel:
        pool = pool_of(channel)
        receiver = pool.FindServiceByName("metrics.v1.ReceiverService")
        assessor = pool.FindServiceByName("metrics.v1.AssessorService")
        metric = pool.FindMessageTypeByName("metrics.v1.Metric")
        method_files = files_of_symbol(channel, "metrics.v1.ReceiverService.PushMetrics")
    assert {"PushMetrics", "StreamMetrics", "SyncMetrics", "RecordLegacyMeasurement"} <= set(
        receiver.methods_by_name
    )
    assert {"ListEvents", "WatchEvents", "ListSensors", "GetSensorStats", "ListReadings"} <= set(
        assessor.methods_by_name
    )
    assert assessor.methods_by_name["WatchEvents"].server_streaming
    assert [f.name for f in metric.fields] == [
        "sensor_id", "metric_type", "value", "reading_time", "unit", "labels",
    ]  # fmt: skip
    # grpcurl's `describe metrics.v1.ReceiverService.PushMetrics` asks for a method's file.
    assert method_files[0] == "metrics/v1/receiver_service.proto"


def test_a_call_built_from_reflection_alone_works(target: Target, sensor_id: str) -> None:
    """What `grpcurl -d '{...}' host metrics.v1.ReceiverService/PushMetrics` does: the request and
    response types from reflection, then the call."""
    with plaintext(target.envoy) as channel:
        pool = pool_of(channel)
        method = pool.FindServiceByName("metrics.v1.ReceiverService").methods_by_name["PushMetrics"]
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        request = request_type()
        reading = request.metrics.add()
        reading.sensor_id, reading.metric_type, reading.value = sensor_id, "temperature", 21.5
        call = channel.unary_unary(
            "/metrics.v1.ReceiverService/PushMetrics",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        response = call(request, timeout=10)
    assert response.accepted_count == 1
