"""The receiver writes a one-sensor PushMetricsRequest's or StreamMetricsRequest's bytes into Kafka as
a MetricBatch without re-encoding them (receiver/service.py, _as_batch). That holds only while each
request's one field is MetricBatch's: `repeated Metric metrics = 1`. A second field added to either
request would leak into the topic; this test fails first, saying why."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor

from metrics.v1 import metric_pb2, receiver_service_pb2


def shape(message: Descriptor) -> list[tuple[int, str, bool, str]]:
    return [
        (
            f.number,
            f.name,
            f.is_repeated,
            f.message_type.full_name if f.message_type else "",
        )
        for f in message.fields
    ]


@pytest.mark.parametrize(
    "request_type", [receiver_service_pb2.PushMetricsRequest, receiver_service_pb2.StreamMetricsRequest]
)
def test_the_requests_written_as_they_are_have_exactly_metric_batchs_fields(request_type: type) -> None:
    assert (
        shape(request_type.DESCRIPTOR)
        == shape(metric_pb2.MetricBatch.DESCRIPTOR)
        == [(1, "metrics", True, "metrics.v1.Metric")]
    ), (
        f"{request_type.DESCRIPTOR.full_name} no longer has only MetricBatch's field: the receiver writes its "
        "bytes into Kafka as a MetricBatch (receiver/service.py, _as_batch); re-encode the readings instead"
    )
    request = request_type(metrics=[metric_pb2.Metric(sensor_id="s-1", metric_type="t", value=1.5)])
    assert metric_pb2.MetricBatch.FromString(request.SerializeToString()).metrics == request.metrics
