"""Fleets of devices: many sensors sending one reading per message, through Envoy, by every path.

The load comes from the Go generator the benchmark uses (clients/go/cmd/fleet-load). The receiver
coalesces the readings of concurrent calls into shared Kafka records; whatever it acknowledged must
be stored exactly once, no more and no less.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from runtime import postgres
from tests.helpers import eventually, wait_consumed
from tests.target import Target

ROOT = Path(__file__).resolve().parents[2]
FLEET_LOAD = str(ROOT / "clients/go/bin/fleet-load")

# The first `make clients` downloads Go modules, npm packages and Maven artifacts.
pytestmark = pytest.mark.timeout(900)

WORKLOADS = {
    # Closed loop: many concurrent single calls, each sensor's readings with increasing times.
    "unary": ["--concurrency", "64", "--sensors", "300"],
    "http": ["--concurrency", "32", "--sensors", "300"],
    "legacy": ["--concurrency", "32", "--sensors", "300"],
    # Devices on streams, each acknowledged per reading; the receiver stamps the arrival time.
    "sync": ["--streams", "500", "--rate", "500", "--warmup", "1s"],
}


async def fleet_load(mode: str, target: str, prefix: str, *flags: str) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        FLEET_LOAD, "--mode", mode, "--target", target, "--prefix", prefix, "--duration", "3s", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def stored(db: asyncpg.Pool, prefix: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM readings WHERE sensor_id >= $1 AND sensor_id < $2",
        prefix,
        postgres.prefix_upper_bound(prefix),
    )
    return count


@pytest.mark.parametrize("mode", WORKLOADS)
async def test_every_acknowledged_reading_is_stored_once(
    mode: str, clients_built: None, target: Target, db: asyncpg.Pool, sensor_id: str
) -> None:
    prefix = f"{sensor_id}-"
    result = await fleet_load(mode, target.envoy, prefix, *WORKLOADS[mode])
    acked = result["acked_readings_total"]
    assert isinstance(acked, int)
    assert result["errors"] == {}, result
    assert acked >= 100, result
    if mode == "sync":
        assert result["streams_open"] == 500, result

    async def all_stored() -> None:
        assert await stored(db, prefix) == acked

    await eventually(all_stored, timeout=60, what=f"{acked} readings of {prefix}* stored")
    # Nothing more comes later: the saver has committed everything now in the topic.
    await wait_consumed(target.kafka_bootstrap_servers, target.saver_group, target.metrics_topic)
    assert await stored(db, prefix) == acked


async def test_a_device_speaking_http_1_0_can_post(target: Target, db: asyncpg.Pool, sensor_id: str) -> None:
    host, port = target.envoy.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"temperature": 21.5}'
    writer.write(
        f"POST /api/v1/sensors/{sensor_id}/measurements HTTP/1.0\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    response = await asyncio.wait_for(reader.read(), 30)  # HTTP/1.0: the server closes when done
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), response
    assert json.loads(payload) == {"result": True, "response": "OK"}

    async def one_stored() -> None:
        assert await stored(db, sensor_id) == 1

    await eventually(one_stored, timeout=30, what="the HTTP/1.0 reading stored")
