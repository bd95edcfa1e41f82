"""Prometheus remote write and remote read bodies, as Prometheus sends them (snappy-compressed
protobuf; docs/prometheus.md), and the answers read back: for the tests and the bench."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from metrics.v1 import prometheus_pb2 as ppb
from runtime import snappy

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
MATCH = {
    "=": ppb.PROMETHEUS_MATCH_TYPE_EQUAL,
    "!=": ppb.PROMETHEUS_MATCH_TYPE_NOT_EQUAL,
    "=~": ppb.PROMETHEUS_MATCH_TYPE_REGEX,
    "!~": ppb.PROMETHEUS_MATCH_TYPE_NOT_REGEX,
}

Series = tuple[Mapping[str, str], Sequence[tuple[float, int]]]  # labels, (value, time ms) samples


def write_body(series: Iterable[Series]) -> bytes:
    request = ppb.PrometheusWriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        ts.labels.extend(ppb.PrometheusLabel(name=k, value=v) for k, v in sorted(labels.items()))
        ts.samples.extend(ppb.PrometheusSample(value=v, timestamp=t) for v, t in samples)
    return snappy.compress(request.SerializeToString())


def read_body(start_ms: int, end_ms: int, *matchers: tuple[str, str, str]) -> bytes:
    """One query: matchers as (label, "=" "!=" "=~" or "!~", value)."""
    query = ppb.PrometheusQuery(start_timestamp_ms=start_ms, end_timestamp_ms=end_ms)
    query.matchers.extend(
        ppb.PrometheusLabelMatcher(type=MATCH[op], name=n, value=v) for n, op, v in matchers
    )
    return snappy.compress(ppb.PrometheusReadRequest(queries=[query]).SerializeToString())


def read_answer(body: bytes) -> list[list[Series]]:
    """A remote read answer: per query, its series as (labels, samples)."""
    response = ppb.PrometheusReadResponse()
    response.ParseFromString(snappy.decompress(body, 1 << 30))
    return [
        [({lb.name: lb.value for lb in ts.labels}, [(s.value, s.timestamp) for s in ts.samples])
         for ts in result.timeseries]
        for result in response.results
    ]  # fmt: skip
