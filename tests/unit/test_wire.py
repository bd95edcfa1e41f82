"""Protobuf's wire format by hand (runtime/wire.py): what protobuf itself writes and reads."""

from __future__ import annotations

from google.protobuf.internal.encoder import _VarintBytes  # the reference encoder
from hypothesis import given
from hypothesis import strategies as st

from metrics.v1 import prometheus_pb2 as ppb
from runtime import wire


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_a_varint_is_protobufs(n: int) -> None:
    assert wire.varint(n) == _VarintBytes(n)


@given(st.lists(st.text(max_size=300), max_size=5))
def test_fields_are_a_message_s_repeated_field(names: list[str]) -> None:
    series = [ppb.PrometheusTimeSeries(labels=[ppb.PrometheusLabel(name=n)]) for n in names]
    result = ppb.PrometheusQueryResult.FromString(
        b"".join(wire.field(1, s.SerializeToString()) for s in series)
    )
    assert list(result.timeseries) == series
