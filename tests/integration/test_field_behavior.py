"""The `google.api.field_behavior` annotations in protos/ say what the services enforce: a request
without a field marked REQUIRED (at the top or in a reading it carries) is refused with
INVALID_ARGUMENT naming that field, and the same request with the field is accepted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from google.api import field_behavior_pb2, httpbody_pb2
from google.protobuf import descriptor, message, timestamp_pb2

from metrics.v1 import alarms_service_pb2 as alpb
from metrics.v1 import assessor_service_pb2 as apb
from metrics.v1 import metric_pb2, rule_pb2, subscription_pb2
from metrics.v1 import notifier_service_pb2 as npb
from metrics.v1 import receiver_service_pb2 as rpb
from metrics.v1 import rules_service_pb2 as rspb
from metrics.v1.alarms_service_pb2_grpc import AlarmsServiceStub
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from metrics.v1.notifier_service_pb2_grpc import SubscriptionsServiceStub
from metrics.v1.receiver_service_pb2_grpc import ReceiverServiceStub
from metrics.v1.rules_service_pb2_grpc import RulesServiceStub
from testkit import prometheus
from tests.helpers import only_alarm, past_us, rules_in_force, send
from tests.target import Target

T0 = past_us(18) // 1_000_000  # a whole hour, in seconds
# A reading's value is REQUIRED, but proto3 cannot tell an unset number from 0 (metric.proto says so):
# a reading without one is a reading of 0, not an error.
# A rule's threshold likewise: a rule without one compares with 0.
NOT_DETECTABLE = {"metrics.v1.Metric.value", "metrics.v1.Rule.threshold"}
# A webhook on the discard port of this machine (the local stack allows loopback).
WEBHOOK = "http://127.0.0.1:9/webhook"
SERVICES = (
    rpb.DESCRIPTOR.services_by_name["ReceiverService"],
    apb.DESCRIPTOR.services_by_name["AssessorService"],
    rspb.DESCRIPTOR.services_by_name["RulesService"],
    alpb.DESCRIPTOR.services_by_name["AlarmsService"],
    npb.DESCRIPTOR.services_by_name["SubscriptionsService"],
)
# These need an alarm of the test's sensor (raised for the test, which is slower than the rest).
ALARM_METHODS = {"GetAlarm", "AcknowledgeAlarm", "ClearAlarm"}


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def valid_requests(
    sensor_id: str, rule_id: str = "r-0", subscription_id: str = "0" * 32, alarm_id: str = "0" * 32
) -> dict[str, message.Message]:
    """A request each unary RPC accepts, with every REQUIRED field set (`rule_id`,
    `subscription_id` and `alarm_id` name existing ones, of the sensor)."""
    window: dict[str, Any] = {"start_time": ts(T0), "end_time": ts(T0 + 3600)}
    reading = metric_pb2.Metric(sensor_id=sensor_id, metric_type="temperature", value=20.5)
    rule = rule_pb2.Rule(metric_type="temperature", threshold=1000, sensor_id_prefix=sensor_id)
    subscription = subscription_pb2.Subscription(url=WEBHOOK, secret="s" * 32, sensor_id_prefix=sensor_id)
    return {
        "CreateRule": rspb.CreateRuleRequest(rule=rule),
        "ListRules": rspb.ListRulesRequest(),
        "GetRule": rspb.GetRuleRequest(rule_id=rule_id),
        "UpdateRule": rspb.UpdateRuleRequest(rule_id=rule_id, rule=rule_pb2.Rule(threshold=2000)),
        "DeleteRule": rspb.DeleteRuleRequest(rule_id=rule_id),
        "ListAlarms": alpb.ListAlarmsRequest(sensor_id=sensor_id),
        "GetAlarm": alpb.GetAlarmRequest(alarm_id=alarm_id),
        "AcknowledgeAlarm": alpb.AcknowledgeAlarmRequest(alarm_id=alarm_id),
        "ClearAlarm": alpb.ClearAlarmRequest(alarm_id=alarm_id),
        "CreateSubscription": npb.CreateSubscriptionRequest(subscription=subscription),
        "ListSubscriptions": npb.ListSubscriptionsRequest(),
        "GetSubscription": npb.GetSubscriptionRequest(subscription_id=subscription_id),
        "ResumeSubscription": npb.ResumeSubscriptionRequest(subscription_id=subscription_id),
        "DeleteSubscription": npb.DeleteSubscriptionRequest(subscription_id=subscription_id),
        "ListDeliveries": npb.ListDeliveriesRequest(subscription_id=subscription_id),
        "PushMetrics": rpb.PushMetricsRequest(metrics=[reading]),
        "WriteLineProtocol": rpb.WriteLineProtocolRequest(
            lines=httpbody_pb2.HttpBody(data=f"m,sensor={sensor_id} value=20.5".encode())
        ),
        "WritePrometheus": rpb.WritePrometheusRequest(
            body=httpbody_pb2.HttpBody(
                data=prometheus.write_body(
                    [({"__name__": "temperature", "sensor": sensor_id}, [(20.5, T0 * 1000)])]
                )
            )
        ),
        "RecordLegacyMeasurement": rpb.RecordLegacyMeasurementRequest(
            sensor_uuid=sensor_id, temperature=20.5
        ),
        "ListEvents": apb.ListEventsRequest(**window),
        "ListSensors": apb.ListSensorsRequest(sensor_id_prefix=sensor_id),
        "GetSensorStats": apb.GetSensorStatsRequest(sensor_id=sensor_id, metric_type="temperature", **window),
        "ListReadings": apb.ListReadingsRequest(sensor_id=sensor_id, **window),
        "AggregateSensors": apb.AggregateSensorsRequest(
            sensor_id_prefix=sensor_id, metric_type="temperature", **window
        ),
        "GetLegacyEvents": apb.GetLegacyEventsRequest(sensor_uuid=sensor_id),
        "GetLegacyMeasurements": apb.GetLegacyMeasurementsRequest(sensor_uuid=sensor_id),
        "ReadPrometheus": apb.ReadPrometheusRequest(
            body=httpbody_pb2.HttpBody(
                data=prometheus.read_body(T0 * 1000, T0 * 1000 + 1, ("sensor", "=", sensor_id))
            )
        ),
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
    for service in SERVICES:
        for method in service.methods:
            if not method.client_streaming and not method.server_streaming:
                yield service.name, method


def cases() -> list[tuple[str, str]]:
    return [
        (method.name, path)
        for _, method in unary_methods()
        for path, full_name in required_paths(method.input_type)
        # An update changes the fields it sets (AIP-134): the resource's own required fields are
        # required of the resource, not of every change to it.
        if full_name not in NOT_DETECTABLE and not (method.name.startswith("Update") and "." in path)
    ]


def test_every_unary_rpc_has_a_valid_request_here() -> None:
    assert sorted(valid_requests("s")) == sorted(method.name for _, method in unary_methods())


@pytest.fixture
def call(envoy_channel: grpc.aio.Channel) -> Callable[[str, message.Message], Any]:
    stubs = [
        ReceiverServiceStub(envoy_channel), AssessorServiceStub(envoy_channel),
        RulesServiceStub(envoy_channel), AlarmsServiceStub(envoy_channel), SubscriptionsServiceStub(envoy_channel),
    ]  # fmt: skip

    def invoke(method: str, request: message.Message) -> Any:
        (stub,) = [stub for stub in stubs if hasattr(stub, method)]
        return getattr(stub, method)(request, timeout=30)

    return invoke


@pytest.fixture
async def made(
    call: Callable[[str, message.Message], Any],
    sensor_id: str,
    target: Target,
    request: pytest.FixtureRequest,
) -> AsyncIterator[dict[str, message.Message]]:
    """The valid requests, naming a rule, a subscription and (for the methods that need one) an alarm
    of the test's sensor (deleted after)."""
    rule = await call("CreateRule", valid_requests(sensor_id)["CreateRule"])
    subscription = (
        await call("CreateSubscription", valid_requests(sensor_id)["CreateSubscription"])
    ).subscription
    alarm_id = "0" * 32
    if request.node.callspec.params["method"] in ALARM_METHODS:
        alarm_id = await raise_alarm(call, target, sensor_id)
    yield valid_requests(sensor_id, rule.rule_id, subscription.subscription_id, alarm_id)
    for method, request in [
        ("DeleteRule", rspb.DeleteRuleRequest(rule_id=rule.rule_id)),
        ("DeleteSubscription", npb.DeleteSubscriptionRequest(subscription_id=subscription.subscription_id)),
    ]:
        with contextlib.suppress(grpc.aio.AioRpcError):  # the test may have deleted it
            await call(method, request)
    for rule in (await call("ListRules", rspb.ListRulesRequest(page_size=1000))).rules:
        if rule.sensor_id_prefix == sensor_id:  # CreateRule's own
            await call("DeleteRule", rspb.DeleteRuleRequest(rule_id=rule.rule_id))
    for found in (
        await call("ListSubscriptions", npb.ListSubscriptionsRequest(page_size=1000))
    ).subscriptions:
        if found.sensor_id_prefix == sensor_id:
            await call(
                "DeleteSubscription", npb.DeleteSubscriptionRequest(subscription_id=found.subscription_id)
            )


async def raise_alarm(call: Callable[[str, message.Message], Any], target: Target, sensor_id: str) -> str:
    """An alarm of the sensor: a rule for its "pressure" readings that the first one raises."""
    rule = rule_pb2.Rule(metric_type="pressure", threshold=0, sensor_id_prefix=sensor_id)
    await call("CreateRule", rspb.CreateRuleRequest(rule=rule))
    await rules_in_force(target)
    await send(target.envoy_url, sensor_id, "pressure", 1.0)
    return await only_alarm(target.envoy_url, sensor_id)


@pytest.mark.parametrize("method", sorted(valid_requests("s")))
async def test_a_request_with_its_required_fields_is_accepted(
    call: Callable[[str, message.Message], Any], made: dict[str, message.Message], method: str
) -> None:
    await call(method, made[method])


@pytest.mark.parametrize(("method", "path"), cases())
async def test_a_request_without_a_required_field_is_refused_naming_it(
    call: Callable[[str, message.Message], Any], made: dict[str, message.Message], method: str, path: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(method, without(made[method], path))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert path in (error.value.details() or ""), error.value.details()
