"""InfluxDB line protocol through Envoy (ReceiverService.WriteLineProtocol, docs/line-protocol.md):
written as to InfluxDB 1.x with curl and 2.x with InfluxDB's own Python client, stored as readings;
bad lines named by number while the good ones are stored."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from stack.system import ensure_telegraf
from testkit.http import http, http_bytes, http_full
from tests import front_door
from tests.helpers import eventually, rfc3339
from tests.target import Target


def curl(url: str, body: str) -> tuple[int, Any]:
    """POSTs `body` as curl does (`--data-binary`): the status and the JSON answer."""
    done = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "--data-binary", "@-", url],
        input=body.encode(), capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    text, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(text) if text else None


async def stored(target: Target, sensor_id: str, count: int) -> list[tuple[str, float, int, dict[str, str]]]:
    """The sensor's readings once there are `count`: (type, value, time µs, labels), in time order."""
    now = time.time()
    window = f"startTime={rfc3339(now - 3600)}&endTime={rfc3339(now + 60)}"

    async def found() -> list[tuple[str, float, int, dict[str, str]]]:
        status, body = await http("GET", f"{target.envoy_url}/v1/sensors/{sensor_id}/readings?{window}")
        assert status == 200, body
        got = [(m["metricType"], m["value"], m["readingTime"], m.get("labels", {})) for m in body["metrics"]]
        assert len(got) == count, got
        return sorted((t, v, _micros(at), labels) for t, v, at, labels in got)

    return await eventually(found, what=f"{count} readings stored")


def _micros(rfc: str) -> int:
    at = timestamp_pb2.Timestamp()
    at.FromJsonString(rfc)
    return at.ToMicroseconds()


async def test_curl_writes_lines_as_to_influxdb_1_and_they_are_stored(target: Target, sensor_id: str) -> None:
    at = int(time.time()) - 600
    body = (
        f"boiler,sensor={sensor_id},site=plant-7 value=81.5,pressure=2i {at}\n"
        "# a comment, and a blank line\n\n"
        f"boiler,sensor={sensor_id} value=82,on=t {at + 60}\n"
    )
    status, answer = await asyncio.to_thread(curl, f"{target.envoy_url}/write?db=plant&precision=s", body)
    assert (status, answer) == (200, {"acceptedCount": 4, "lineCount": 2})
    assert await stored(target, sensor_id, 4) == [
        ("boiler", 81.5, at * 1_000_000, {"site": "plant-7"}),
        ("boiler", 82.0, (at + 60) * 1_000_000, {}),
        ("boiler_on", 1.0, (at + 60) * 1_000_000, {}),
        ("boiler_pressure", 2.0, at * 1_000_000, {"site": "plant-7"}),
    ]


async def test_bad_lines_are_named_and_the_good_ones_stored(target: Target, sensor_id: str) -> None:
    at = (int(time.time()) - 300) * 1000
    body = "\n".join([
        f"boiler,sensor={sensor_id} value=1 {at}",
        f"boiler,site=plant-7 value=2 {at}",
        f"boiler,sensor={sensor_id} value=hot {at}",
        f'boiler,sensor={sensor_id} value=3,note="door open" {at}',
        f"boiler,sensor={sensor_id} value=4 {at + 1}",
        # Good line protocol, refused by the receiver's checks of any reading: a sensor id it does not
        # take, a time too far ahead.
        f"boiler,sensor={sensor_id}/x value=5 {at}",
        f"boiler,sensor={sensor_id} value=6 {at + 86_400_000}",
    ])  # fmt: skip
    status, answer = await asyncio.to_thread(curl, f"{target.envoy_url}/write?precision=ms", body)
    assert status == 400, answer
    assert answer["message"].startswith("partial write: 5 of 7 lines not written: line 2: no sensor")
    (details,) = answer["details"]
    violations = {v["field"]: v["description"] for v in details["fieldViolations"]}
    assert list(violations) == ["line 2", "line 3", "line 4", "line 6", "line 7"]
    assert "is a string" in violations["line 4"]
    assert violations["line 6"].startswith("sensor_id:"), violations
    assert violations["line 7"].startswith("reading_time:"), violations
    assert await stored(target, sensor_id, 2) == [
        ("boiler", 1.0, at * 1000, {}),
        ("boiler", 4.0, (at + 1) * 1000, {}),
    ]
    status, answer = await asyncio.to_thread(curl, f"{target.envoy_url}/write?precision=hours", body)
    assert status == 400 and answer["message"].startswith("precision:"), answer


async def test_influxdb_s_python_client_writes_as_to_influxdb_2(target: Target, sensor_id: str) -> None:
    at = (time.time_ns() // 1_000_000 - 120_000) * 1_000_000  # whole milliseconds, in ns

    def write() -> None:
        with InfluxDBClient(url=target.envoy_url, token="unused-on-8080", org="acme") as client:
            points = [
                Point("line").tag("sensor", sensor_id).tag("site", "plant-7").field("value", 7.25).time(at),
                Point("line").tag("sensor", sensor_id).field("speed", 1200).time(at + 1_000_000),
            ]
            client.write_api(write_options=SYNCHRONOUS).write(
                "plant", record=points, write_precision=WritePrecision.NS
            )

    await asyncio.to_thread(write)
    assert await stored(target, sensor_id, 2) == [
        ("line", 7.25, at // 1000, {"site": "plant-7"}),
        ("line_speed", 1200.0, at // 1000 + 1000, {}),
    ]


async def test_a_gzip_body_is_taken(target: Target, sensor_id: str) -> None:
    at = int(time.time()) - 200
    body = gzip.compress(
        f"boiler,sensor={sensor_id} value=5 {at}\nboiler,sensor={sensor_id} value=6 {at + 1}".encode()
    )
    status, _, answer = await http_full(
        "POST", f"{target.envoy_url}/write?precision=s", raw=body, headers={"Content-Encoding": "gzip"}
    )
    assert (status, answer) == (200, {"acceptedCount": 2, "lineCount": 2})
    assert [v for _, v, _, _ in await stored(target, sensor_id, 2)] == [5.0, 6.0]


async def test_on_the_tls_port_a_token_comes_as_influxdb_clients_send_it(
    target: Target, sensor_id: str
) -> None:
    token = front_door.token(target, scopes=("ingest",), sensors=(sensor_id,))
    tls = front_door.tls_context(target)
    at = int(time.time()) - 100
    ways = {
        "Bearer": ("/write", {"Authorization": f"Bearer {token}"}),
        "InfluxDB 2.x's Token": ("/api/v2/write", {"Authorization": f"Token {token}"}),
        "InfluxDB 1.x's password": (f"/write?u=plant&p={token}", {}),
    }
    for n, (path, headers) in enumerate(ways.values()):
        query = "&" if "?" in path else "?"
        status, _, answer = await http_full(
            "POST", f"{target.envoy_tls_url}{path}{query}precision=s", raw=f"m,sensor={sensor_id} value={n} {at + n}".encode(),
            headers=headers, tls=tls,
        )  # fmt: skip
        assert (status, answer) == (200, {"acceptedCount": 1, "lineCount": 1}), list(ways)[n]
    status, _, answer = await http_full(
        "POST", f"{target.envoy_tls_url}/write?precision=s", raw=f"m,sensor={sensor_id} value=9 {at}".encode(),
        headers={"Authorization": "Token not-a-token"}, tls=tls,
    )  # fmt: skip
    assert status == 401, answer
    assert [v for _, v, _, _ in await stored(target, sensor_id, 3)] == [0.0, 1.0, 2.0]


async def test_a_body_over_the_front_doors_limit_is_413_and_nothing_of_it_is_stored(
    target: Target, sensor_id: str
) -> None:
    line = f"boiler,sensor={sensor_id} value=1\n".encode()
    body = line * (65 * 1024 * 1024 // len(line) + 1)
    status, _, _ = await asyncio.to_thread(http_bytes, "POST", f"{target.envoy_url}/write", raw=body)
    assert status == 413
    status, answer = await asyncio.to_thread(
        curl, f"{target.envoy_url}/write", f"boiler,sensor={sensor_id} value=2"
    )
    assert (status, answer) == (200, {"acceptedCount": 1, "lineCount": 1})
    assert [v for _, v, _, _ in await stored(target, sensor_id, 1)] == [2.0]


async def test_telegraf_writes_as_to_influxdb_1_and_2(target: Target, sensor_id: str, tmp_path: Path) -> None:
    """Telegraf's own outputs: influxdb (1.x, /write, plaintext) with its memory input, and
    influxdb_v2 (2.x, /api/v2/write, gzip) on the TLS port with a token, with a file of lines."""
    telegraf = await asyncio.to_thread(ensure_telegraf)
    token = front_door.token(target, scopes=("ingest",), sensors=(sensor_id,))
    (tmp_path / "boiler.lp").write_text(
        f"boiler,sensor={sensor_id}.file,site=plant-7 value=81.5,pressure=2i\n"
    )
    (tmp_path / "telegraf.conf").write_text(f"""
[agent]
  interval = "1s"
  flush_interval = "1s"
  hostname = "{sensor_id}"

[[inputs.mem]]

[[inputs.file]]
  files = ["{tmp_path / "boiler.lp"}"]
  data_format = "influx"

[[outputs.influxdb]]
  urls = ["{target.envoy_url}"]
  database = "plant"
  skip_database_creation = true
  namepass = ["mem"]

[[outputs.influxdb_v2]]
  urls = ["{target.envoy_tls_url}"]
  token = "{token}"
  organization = "acme"
  bucket = "plant"
  tls_ca = "{front_door.ca_file(target)}"
  content_encoding = "gzip"
  namepass = ["boiler"]
""")
    command = [str(telegraf), "--config", str(tmp_path / "telegraf.conf")]
    with (tmp_path / "telegraf.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=subprocess.STDOUT)
        try:
            memory = await eventually(
                lambda: types_of(target, sensor_id, "mem_"), what="Telegraf's mem readings"
            )
            boiler = await eventually(
                lambda: types_of(target, f"{sensor_id}.file", ""), what="Telegraf's file"
            )
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
    # Telegraf's memory input, a field each: mem_used_percent, mem_available, ...; the host is the sensor.
    assert {"mem_used_percent", "mem_available", "mem_total"} <= memory.keys(), memory
    assert 0 < memory["mem_used_percent"][0] < 100 and memory["mem_used_percent"][1] == {}
    # The file's line, with the host Telegraf adds as a label (the sensor tag names the sensor).
    assert boiler["boiler"] == (81.5, {"site": "plant-7", "host": sensor_id})
    assert boiler["boiler_pressure"] == (2.0, {"site": "plant-7", "host": sensor_id})


async def types_of(target: Target, sensor_id: str, prefix: str) -> dict[str, tuple[float, dict[str, str]]]:
    """The sensor's latest reading of each metric type starting with `prefix` (value, labels); at
    least one."""
    now = time.time()
    window = f"startTime={rfc3339(now - 600)}&endTime={rfc3339(now + 60)}"
    status, body = await http("GET", f"{target.envoy_url}/v1/sensors/{sensor_id}/readings?{window}")
    assert status == 200, body
    found = {m["metricType"]: (m["value"], m.get("labels", {})) for m in body["metrics"]
             if m["metricType"].startswith(prefix)}  # fmt: skip
    assert found, body
    return found
