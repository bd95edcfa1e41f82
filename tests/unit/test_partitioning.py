"""Records are partitioned as Kafka's Java client does, so producers agree."""

from __future__ import annotations

import ctypes

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

from metrics.v1 import metric_pb2
from runtime.writer import sensor_batches


@pytest.mark.parametrize(
    ("key", "expected"),
    # Vectors of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's UtilsTest).
    [("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
     ("a-little-bit-longer-string", -1486304829), ("abc", 479470107),
     ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971)],
)  # fmt: skip
def test_murmur2_matches_kafkas_java_client(key: str, expected: int) -> None:
    assert ctypes.c_int32(murmur2(key.encode())).value == expected


def test_default_partitioner_is_positive_murmur2_mod_partitions() -> None:
    partitions = list(range(8))
    for key in (b"sensor-1", b"sensor-2", b"21"):
        assert DefaultPartitioner()(key, partitions, partitions) == (murmur2(key) & 0x7FFFFFFF) % 8


def test_one_record_per_sensor_in_batch_order() -> None:
    metrics = [
        metric_pb2.Metric(sensor_id=s, metric_type="t", value=float(i)) for i, s in enumerate("abab c")
    ]
    out = sensor_batches(metrics)
    assert [sensor for sensor, _, _ in out] == ["a", "b", " ", "c"]
    assert [n for _, _, n in out] == [2, 2, 1, 1]
    values = {s: [m.value for m in metric_pb2.MetricBatch.FromString(v).metrics] for s, v, _ in out}
    assert values["a"] == [0.0, 2.0]
    assert values["b"] == [1.0, 3.0]
