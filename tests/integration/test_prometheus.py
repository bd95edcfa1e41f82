"""Prometheus remote write in and remote read out, through Envoy (docs/prometheus.md): bodies written
as Prometheus writes them, Prometheus itself and vmagent remote-writing their scrapes, the readings
read back through our API, through remote read, and as PromQL through the stack's Prometheus."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from google.protobuf import timestamp_pb2

from metrics.v1 import prometheus_pb2 as ppb
from runtime import snappy
from stack.system import ensure_vmagent
from testkit import prometheus
from testkit.http import http, http_bytes
from tests import front_door
from tests.helpers import eventually, rfc3339
from tests.services import free_port
from tests.target import Target

REMOTE_WRITE = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0"}  # fmt: skip


async def write(target: Target, body: bytes, **options: Any) -> tuple[int, Any]:
    """POSTs a remote write body as Prometheus does: the status and the JSON answer."""
    return await http("POST", f"{target.envoy_url}/api/v1/write", raw=body, headers=REMOTE_WRITE, **options)


async def remote_read(target: Target, body: bytes) -> list[list[prometheus.Series]]:
    status, headers, answer = await asyncio.to_thread(
        http_bytes, "POST", f"{target.envoy_url}/api/v1/read", raw=body, headers=REMOTE_WRITE
    )
    assert status == 200, answer[:500]
    assert headers["content-type"] == "application/x-protobuf"
    return prometheus.read_answer(answer)


async def stored(target: Target, sensor_id: str, count: int) -> list[tuple[str, float, int, dict[str, str]]]:
    """The sensor's readings once there are at least `count`: (type, value, time ms, labels), sorted."""
    now = time.time()
    window = f"startTime={rfc3339(now - 3600)}&endTime={rfc3339(now + 60)}"

    async def found() -> list[tuple[str, float, int, dict[str, str]]]:
        status, body = await http("GET", f"{target.envoy_url}/v1/sensors/{sensor_id}/readings?{window}")
        assert status == 200, body
        assert len(body["metrics"]) >= count, body["metrics"]
        return sorted(
            (m["metricType"], m["value"], _millis(m["readingTime"]), m.get("labels", {}))
            for m in body["metrics"]
        )

    return await eventually(found, what=f"{count} readings of {sensor_id} stored")


def _millis(rfc: str) -> int:
    at = timestamp_pb2.Timestamp()
    at.FromJsonString(rfc)
    return at.ToMilliseconds()


async def promql(target: Target, path: str, **params: Any) -> list[dict[str, Any]]:
    """The result of a PromQL query to the stack's Prometheus (which reads the readings through
    remote read)."""
    status, body = await http("GET", f"http://{target.prometheus}/api/v1/{path}?{urlencode(params)}")
    assert status == 200 and body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


async def test_samples_written_as_prometheus_does_are_stored_and_read_back(
    target: Target, sensor_id: str
) -> None:
    now = int(time.time() * 1000) // 1000 * 1000 - 60_000
    other = f"{sensor_id}.b"
    body = prometheus.write_body([
        ({"__name__": "boiler_temperature", "sensor": sensor_id, "site": "plant-7"}, [(81.5, now), (82.5, now + 1000)]),
        # No `sensor`: the instance names it; the job is a label.
        ({"__name__": "boiler_pressure", "instance": other, "job": "boilers"}, [(2.0, now)]),
        # A series that ended: its stale marker is dropped, and counted.
        ({"__name__": "boiler_pressure", "instance": other, "job": "old"}, [(prometheus.STALE_NAN, now + 1000)]),
    ])  # fmt: skip
    assert await write(target, body) == (200, {"acceptedCount": 3, "staleCount": 1})
    assert await stored(target, sensor_id, 2) == [
        ("boiler_temperature", 81.5, now, {"site": "plant-7"}),
        ("boiler_temperature", 82.5, now + 1000, {"site": "plant-7"}),
    ]
    assert await stored(target, other, 1) == [("boiler_pressure", 2.0, now, {"job": "boilers"})]

    # Remote read: matchers on the name, the sensor and a label.
    everything = await remote_read(
        target, prometheus.read_body(now - 1000, now + 1000, ("sensor", "=~", f"{sensor_id}.*"))
    )
    assert sorted(everything[0], key=lambda s: s[0]["__name__"]) == [
        ({"__name__": "boiler_pressure", "sensor": other, "job": "boilers"}, [(2.0, now)]),
        ({"__name__": "boiler_temperature", "sensor": sensor_id, "site": "plant-7"}, [(81.5, now), (82.5, now + 1000)]),
    ]  # fmt: skip
    assert await remote_read(target, prometheus.read_body(
        now, now, ("__name__", "=", "boiler_temperature"), ("sensor", "=", sensor_id), ("site", "!=", "plant-7")
    )) == [[]]  # fmt: skip
    assert await remote_read(target, prometheus.read_body(
        now, now, ("__name__", "=~", "boiler_.*"), ("sensor", "!~", f"{sensor_id}\\.b"), ("sensor", "=~", f"{sensor_id}.*")
    )) == [[({"__name__": "boiler_temperature", "sensor": sensor_id, "site": "plant-7"}, [(81.5, now)])]]  # fmt: skip

    # PromQL, through the stack's Prometheus and its remote_read to us.
    selector = f'boiler_temperature{{sensor="{sensor_id}"}}'
    result = await promql(target, "query", query=f"avg_over_time({selector}[5m])", time=(now + 1000) / 1000)
    assert [(r["metric"], float(r["value"][1])) for r in result] == [
        ({"sensor": sensor_id, "site": "plant-7"}, 82.0)
    ]
    result = await promql(
        target, "query_range", query=selector, start=now / 1000, end=(now + 1000) / 1000, step=1
    )
    assert [[(t * 1000, float(v)) for t, v in r["values"]] for r in result] == [
        [(now, 81.5), (now + 1000, 82.5)]
    ]


async def test_series_that_cannot_be_readings_are_named_and_the_good_ones_stored(
    target: Target, sensor_id: str
) -> None:
    now = int(time.time() * 1000) - 60_000
    bad = f"{sensor_id}.bad"
    series: list[prometheus.Series] = [
        ({"__name__": "flow", "sensor": sensor_id}, [(1.0, now)]),
        ({"sensor": bad}, [(2.0, now)]),
        ({"__name__": "flow", "job": "pumps"}, [(3.0, now)]),
        ({"__name__": "job:flow:rate5m", "sensor": bad}, [(4.0, now)]),
        ({"__name__": "flow", "sensor": bad}, [(5.0, now), (math.nan, now + 1)]),
        ({"__name__": "flow", "sensor": sensor_id, "line": "2"}, [(6.0, now + 2)]),
    ]
    request = ppb.PrometheusWriteRequest()
    request.ParseFromString(snappy.decompress(prometheus.write_body(series), 1 << 20))
    request.timeseries.add().CopyFrom(request.timeseries[0])
    request.timeseries[-1].histograms.add(timestamp=now)
    status, answer = await write(target, snappy.compress(request.SerializeToString()))
    assert status == 400, answer
    assert answer["message"].startswith("partial write: 5 of 7 series not written"), answer
    violations = answer["details"][0]["fieldViolations"]
    assert [v["field"] for v in violations] == [f"timeseries[{i}]" for i in (1, 2, 3, 4, 6)]
    reasons = [v["description"] for v in violations]
    assert "has no metric name (the label __name__)" in reasons[0]
    assert reasons[1] == 'flow{job="pumps"} has none of the sensor labels sensor, instance'
    assert "'job:flow:rate5m' is not a metric type" in reasons[2]
    assert "value: must be a finite number, got nan" in reasons[3]
    assert "native histograms" in reasons[4]
    assert await stored(target, sensor_id, 2) == [
        ("flow", 1.0, now, {}),
        ("flow", 6.0, now + 2, {"line": "2"}),
    ]
    # Nothing of a refused series, though the series 4's first sample was good.
    status, body = await http("GET", f"{target.envoy_url}/v1/sensors?sensorIdPrefix={bad}")
    assert (status, body["sensors"]) == (200, []), body


async def test_bodies_that_cannot_be_read_are_refused_and_the_receiver_stays_up(
    target: Target, sensor_id: str
) -> None:
    status, answer = await write(target, b"not snappy at all")
    assert status == 400 and answer["details"][0]["fieldViolations"][0]["field"] == "body", answer
    status, answer = await write(target, snappy.compress(b"\xff\xff\xff\xff"))
    assert status == 400 and "is not a Prometheus WriteRequest" in answer["message"], answer
    # A million series: refused by the length its body says it inflates to, before inflating it.
    one = ppb.PrometheusWriteRequest()
    one.timeseries.add(labels=[ppb.PrometheusLabel(name="__name__", value="flow"),
                               ppb.PrometheusLabel(name="sensor", value=sensor_id)],
                       samples=[ppb.PrometheusSample(value=1.0, timestamp=int(time.time() * 1000))])  # fmt: skip
    million = snappy.compress(one.SerializeToString() * 1_000_000)
    status, answer = await write(target, million)
    assert status == 400, answer
    inflated = len(one.SerializeToString()) * 1_000_000
    assert f"decompresses to {inflated:,} bytes, more than the limit of 33,554,432" in answer["message"], (
        answer
    )
    # A body over the front door's limit: Envoy's 413, the receiver never sees it.
    status, _, _ = await asyncio.to_thread(
        http_bytes,
        "POST",
        f"{target.envoy_url}/api/v1/write",
        raw=os.urandom(65 * 1024 * 1024),
        headers=REMOTE_WRITE,
    )
    assert status == 413
    # The receiver is up, and nothing of the refused requests is stored.
    assert await write(target, one_sample(sensor_id, 7.0)) == (200, {"acceptedCount": 1, "staleCount": 0})
    assert [value for _, value, _, _ in await stored(target, sensor_id, 1)] == [7.0]


def one_sample(sensor_id: str, value: float) -> bytes:
    return prometheus.write_body(
        [({"__name__": "flow", "sensor": sensor_id}, [(value, int(time.time() * 1000))])]
    )


async def test_on_the_tls_port_remote_write_takes_a_bearer_token(target: Target, sensor_id: str) -> None:
    token = front_door.token(target, scopes=("ingest",), sensors=(sensor_id,))
    tls = front_door.tls_context(target)
    url = f"{target.envoy_tls_url}/api/v1/write"

    async def post(body: bytes, headers: Mapping[str, str]) -> int:
        status, _, _ = await asyncio.to_thread(
            http_bytes, "POST", url, raw=body, headers={**REMOTE_WRITE, **headers}, tls=tls
        )
        return status

    assert await post(one_sample(sensor_id, 1.0), {}) == 401
    assert await post(one_sample(f"other-{sensor_id}", 1.0), front_door.auth(token)) == 403
    assert await post(one_sample(sensor_id, 2.0), front_door.auth(token)) == 200
    assert [value for _, value, _, _ in await stored(target, sensor_id, 1)] == [2.0]


@asynccontextmanager
async def running(command: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process for the length of the block, stopped (SIGTERM) after it; its output in `log`."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)


async def test_prometheus_remote_writes_its_scrape_and_promql_reads_it_back(
    target: Target, sensor_id: str, tmp_path: Path
) -> None:
    if not target.metrics.get("receiver"):
        pytest.fail("the target names no receiver metrics endpoint to scrape")
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "receiver", "static_configs": [{"targets": [target.metrics["receiver"]]}]}],
        "remote_write": [{
            "url": f"{target.envoy_url}/api/v1/write",
            "queue_config": {"batch_send_deadline": "1s", "max_shards": 1},
            # This run's series only: named by a sensor of the test's own (the instance stays a label).
            "write_relabel_configs": [
                {"source_labels": ["__name__"], "regex": "up|metrics_receiver_readings_accepted_total", "action": "keep"},
                {"target_label": "sensor", "replacement": sensor_id},
            ],
        }],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        shutil.which("prometheus") or "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    async with running(command, tmp_path / "prometheus.log"):
        readings = await stored(target, sensor_id, 2)
    ups = [(value, labels) for metric_type, value, _, labels in readings if metric_type == "up"]
    assert ups and ups[0] == (1.0, {"instance": target.metrics["receiver"], "job": "receiver"}), readings
    assert any(t == "metrics_receiver_readings_accepted_total" for t, _, _, _ in readings), readings
    result = await promql(target, "query", query=f'max_over_time(up{{sensor="{sensor_id}"}}[1h])')
    assert [(r["metric"]["job"], r["value"][1]) for r in result] == [("receiver", "1")], result


async def test_vmagent_remote_writes_its_scrape(target: Target, sensor_id: str, tmp_path: Path) -> None:
    vmagent = ensure_vmagent()
    scrape = {"scrape_configs": [{"job_name": "receiver", "scrape_interval": "1s",
                                  "static_configs": [{"targets": [target.metrics["receiver"]]}],
                                  "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "up|metrics_receiver_readings_accepted_total",
                                                              "action": "keep"}]}]}  # fmt: skip
    (tmp_path / "scrape.yml").write_text(yaml.safe_dump(scrape))
    command = [
        str(vmagent), f"-promscrape.config={tmp_path / 'scrape.yml'}", f"-httpListenAddr=127.0.0.1:{free_port()}",
        f"-remoteWrite.url={target.envoy_url}/api/v1/write", f"-remoteWrite.label=sensor={sensor_id}",
        f"-remoteWrite.tmpDataPath={tmp_path / 'queue'}", "-remoteWrite.flushInterval=1s",
    ]  # fmt: skip
    async with running(command, tmp_path / "vmagent.log"):

        async def kept_and_up() -> list[tuple[str, float, int, dict[str, str]]]:
            readings = await stored(target, sensor_id, 1)
            assert {"up", "metrics_receiver_readings_accepted_total"} <= {t for t, _, _, _ in readings}, (
                readings
            )
            return readings

        readings = await eventually(kept_and_up, what="vmagent's samples stored")
    # What the relabelling kept, and the series vmagent adds to each scrape (up, scrape_*).
    assert all(
        t in ("up", "metrics_receiver_readings_accepted_total") or t.startswith("scrape_")
        for t, _, _, _ in readings
    )
    assert all(
        labels == {"instance": target.metrics["receiver"], "job": "receiver"} for *_, labels in readings
    )
