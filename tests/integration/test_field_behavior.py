"""The `google.api.field_behavior` annotations in protos/ say what the services enforce: a request
without a field marked REQUIRED (at the top or in a reading it carries) is refused with
INVALID_ARGUMENT naming that field, and the same request with the field is accepted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.api import field_behavior_pb2
from google.protobuf import descriptor, message, timestamp_pb2

from metrics.v1 import assessor_service_pb2 as apb
from metrics.v1 import metric_pb2
from metrics.v1 import receiver_service_pb2 as rpb
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub

T0 = 1_790_640_000  # 2026-09-29T00:00:00Z
# A reading's value is REQUIRED, but proto3 cannot tell an unset number from 0 (metric.proto says so):
# a reading without one is a reading of 0, not an error.
NOT_DETECTABLE = {"metrics.v1.Metric.value"}


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def valid_requests(sensor_id: str) -> dict[str, message.Message]:
    """A request each unary RPC accepts, with every REQUIRED field set."""
    window: dict[str, Any] = {"start_time": ts(T0), "end_time": ts(T0 + 3600)}
    reading = metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=20.5)
    return {
        "PushMetrics": rpb.PushMetricsRequest(metrics=[reading]),
        "RecordLegacyMeasurement": rpb.RecordLegacyMeasurementRequest(
            sensor_uuid=sensor_id, temperature=20.5
        ),
        "ListEvents": apb.ListEventsRequest(**window),
        "ListSensors": apb.ListSensorsRequest(sensor_id_prefix=sensor_id),
        "GetSensorStats": apb.GetSensorStatsRequest(sensor_id=sensor_id, metric_type="temperature", **window),
        "ListReadings": apb.ListReadingsRequest(sensor_id=sensor_id, **window),
        "GetLegacyEvents": apb.GetLegacyEventsRequest(sensor_uuid=sensor_id),
        "GetLegacyMeasurements": apb.GetLegacyMeasurementsRequest(sensor_uuid=sensor_id),
    }


def is_required(field: descriptor.FieldDescriptor) -> bool:
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviors


def required_paths(msg: descriptor.Descriptor, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, full field name) of every REQUIRED field, into the first element of repeated messages."""
    for field in msg.fields:
        if not is_required(field):
            continue
        path = prefix + field.name
        yield path, field.full_name
        if field.message_type is not None and field.message_type.file.package == "metrics.v1":
            inner = f"{path}[0]." if field.is_repeated else f"{path}."
            yield from required_paths(field.message_type, inner)


def without(request: message.Message, path: str) -> message.Message:
    """A copy of `request` with the field at `path` (e.g. "metrics[0].sensor_id") cleared."""
    copy = type(request)()
    copy.CopyFrom(request)
    holder: Any = copy
    *parents, last = path.split(".")
    for part in parents:
        name, _, index = part.partition("[")
        holder = getattr(holder, name)[int(index.rstrip("]"))] if index else getattr(holder, name)
    holder.ClearField(last)
    return copy


def unary_methods() -> Iterator[tuple[str, descriptor.MethodDescriptor]]:
    for service in (rpb.DESCRIPTOR.services_by_name["ReceiverService"],
                    apb.DESCRIPTOR.services_by_name["AssessorService"]):  # fmt: skip
        for method in service.methods:
            if not method.client_streaming and not method.server_streaming:
                yield service.name, method


def cases() -> list[tuple[str, str]]:
    return [
        (method.name, path)
        for _, method in unary_methods()
        for path, full_name in required_paths(method.input_type)
        if full_name not in NOT_DETECTABLE
    ]


def test_every_unary_rpc_has_a_valid_request_here() -> None:
    assert sorted(valid_requests("s")) == sorted(method.name for _, method in unary_methods())


@pytest.fixture
def call(
    receiver: ReceiverServiceStub, assessor: AssessorServiceStub
) -> Callable[[str, message.Message], Any]:
    def invoke(method: str, request: message.Message) -> Any:
        stub = receiver if hasattr(receiver, method) else assessor
        return getattr(stub, method)(request, timeout=30)

    return invoke


@pytest.mark.parametrize("method", sorted(valid_requests("s")))
async def test_a_request_with_its_required_fields_is_accepted(
    call: Callable[[str, message.Message], Any], method: str, sensor_id: str
) -> None:
    await call(method, valid_requests(sensor_id)[method])


@pytest.mark.parametrize(("method", "path"), cases())
async def test_a_request_without_a_required_field_is_refused_naming_it(
    call: Callable[[str, message.Message], Any], method: str, path: str, sensor_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(method, without(valid_requests(sensor_id)[method], path))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert path in (error.value.details() or ""), error.value.details()
