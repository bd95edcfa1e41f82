"""The example clients in clients/ (Go, TypeScript, Java), generated from protos/ and built by `make clients`
(which this module runs itself, so `make test` needs nothing more), run against the deployment.

Each client streams the original scenario (10, 100, 97, 99, 10, 100, 107, 98) of a new sensor through Envoy
and reads it back from the assessor; what it reports must match PostgreSQL and the expected events (at 99
and 98; averages 77.625, maximum 107). The Go Kafka consumer must decode the same events from the events
topic."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stack import credentials
from tests.helpers import eventually
from tests.target import Target

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = [10.0, 100.0, 97.0, 99.0, 10.0, 100.0, 107.0, 98.0]
EVENT_READINGS = [3, 7]  # the readings that raise events: 99, then 98
CLIENTS = {
    "go": [str(ROOT / "clients/go/bin/metrics-client")],
    "typescript": ["node", str(ROOT / "clients/typescript/dist/main.js")],
    "java": ["java", "-jar", str(ROOT / "clients/java/target/metrics-client.jar")],
}
EVENTS_CONSUMER = str(ROOT / "clients/go/bin/events-consumer")
RPCS = {
    "sync": "/metrics.v1.ReceiverService/SyncMetrics",
    "stream": "/metrics.v1.ReceiverService/StreamMetrics",
}
# How long a client waits for the pipeline to store what it sent (other tests may restart services).
WAIT_S = 60

# The first build downloads Go modules, npm packages and Maven artifacts; warm, `make clients` is a no-op.
pytestmark = pytest.mark.timeout(900)


async def run(*command: str, timeout: float = WAIT_S + 30) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def run_client(language: str, target: Target, sensor_id: str, *args: str) -> dict[str, Any]:
    code, stdout, stderr = await run(
        *CLIENTS[language], "--target", target.envoy, "--timeout", str(WAIT_S), *args, sensor_id
    )
    assert code == 0, f"{language} client exited with {code}:\n{stderr}\n{stdout}"
    summary: dict[str, Any] = json.loads(stdout)
    return summary


def micros(rfc3339: str) -> int:
    """Microseconds since 1970 of an RFC 3339 UTC time as the protobuf JSON mapping writes it (0-9 digits)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", rfc3339)
    assert match, rfc3339
    seconds = int(datetime.fromisoformat(match[1] + "+00:00").timestamp())
    return seconds * 1_000_000 + int((match[2] or "").ljust(9, "0")) // 1000


async def stored_readings(db: asyncpg.Pool, sensor_id: str) -> list[tuple[str, float, int]]:
    rows = await db.fetch(
        "SELECT metric_type, value, reading_time FROM readings WHERE sensor_id = $1 ORDER BY reading_time",
        sensor_id,
    )
    return [(r["metric_type"], r["value"], r["reading_time"]) for r in rows]


async def stored_events(db: asyncpg.Pool, sensor_id: str) -> list[tuple[str, float, int]]:
    rows = await db.fetch(
        "SELECT event_id, value, reading_time FROM events WHERE sensor_id = $1 ORDER BY reading_time",
        sensor_id,
    )
    return [(r["event_id"].hex, r["value"], r["reading_time"]) for r in rows]


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("language", CLIENTS)
async def test_client_sends_the_scenario_and_reads_it_back(
    clients_built: None, language: str, rpc: str, target: Target, db: asyncpg.Pool, sensor_id: str
) -> None:
    summary = await run_client(language, target, sensor_id, "--rpc", rpc, "--events", "2")

    assert (summary["language"], summary["sensorId"], summary["rpc"]) == (language, sensor_id, RPCS[rpc])
    assert summary["complete"] is True

    # What it sent: the scenario, one reading per second, each reading its own batch.
    sent = summary["sent"]["metrics"]
    assert [(m["sensorId"], m["metricType"], m["value"]) for m in sent] == [
        (sensor_id, "temperature", v) for v in SCENARIO
    ]
    times = [micros(m["readingTime"]) for m in sent]
    assert [b - a for a, b in itertools.pairwise(times)] == [1_000_000] * (len(SCENARIO) - 1)

    # What the receiver answered (protobuf JSON: 64-bit integers are strings, zero values left out).
    responses = summary["sent"]["responses"]
    if rpc == "sync":
        assert [
            (r["sequence"], r["acceptedCount"], r.get("status", {}).get("code", 0)) for r in responses
        ] == [(str(i), 1, 0) for i in range(1, len(SCENARIO) + 1)]
    else:
        assert responses == [{"acceptedCount": "8", "batchCount": "8"}]

    # PostgreSQL holds exactly what it sent, and the events at 99 and 98.
    assert await stored_readings(db, sensor_id) == [
        ("temperature", v, t) for v, t in zip(SCENARIO, times, strict=True)
    ]
    events = await stored_events(db, sensor_id)
    assert [(value, time) for _, value, time in events] == [(SCENARIO[i], times[i]) for i in EVENT_READINGS]

    # What it read back from the assessor agrees with both.
    read = summary["read"]
    assert read["events"]["sensorUuid"] == sensor_id
    assert [(e["temperature"], micros(e["at"]), e["type"]) for e in read["events"]["events"]] == [
        (value, time, "TEMPERATURE_EXCEEDED") for _, value, time in events
    ]
    assert read["measurements"] == {
        "sensorUuid": sensor_id,
        "averageLastHour": 77.625,
        "averageLast7Days": 77.625,
        "maxLast30Days": 107,
    }


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("language", CLIENTS)
async def test_client_reports_a_rejected_batch(
    clients_built: None, language: str, rpc: str, target: Target, sensor_id: str
) -> None:
    # Not a metric type: the receiver rejects the first batch (an acknowledgement with INVALID_ARGUMENT
    # on SyncMetrics, the call's status on StreamMetrics); the client says so and exits with 1.
    code, stdout, stderr = await run(
        *CLIENTS[language], "--target", target.envoy, "--rpc", rpc, "--metric-type", "Not-A-Type", sensor_id
    )
    assert (code, stdout) == (1, "")
    assert stderr.startswith(f"metrics-client: {RPCS[rpc]}: "), stderr
    assert "INVALID_ARGUMENT: " in stderr and "metric_type" in stderr, stderr
    if rpc == "sync":
        assert "batch 1 not written" in stderr, stderr


async def test_kafka_consumer_decodes_the_events(
    clients_built: None, target: Target, db: asyncpg.Pool, sensor_id: str
) -> None:
    await run_client("go", target, sensor_id, "--events", "2")
    events = await stored_events(db, sensor_id)
    assert [value for _, value, _ in events] == [99.0, 98.0]

    code, stdout, stderr = await run(
        EVENTS_CONSUMER, "--brokers", target.kafka_bootstrap_servers, "--topic", target.events_topic,
        "--user", credentials.KAFKA_ADMIN.user, "--password-file", str(target.password_file(credentials.KAFKA_ADMIN)),
        "--since", "10m", "--events", "2", "--timeout", str(WAIT_S), sensor_id,
    )  # fmt: skip
    assert code == 0, f"events-consumer exited with {code}:\n{stderr}\n{stdout}"
    summary = json.loads(stdout)
    assert (summary["sensorId"], summary["topic"], summary["complete"], summary["skipped"]) == (
        sensor_id, target.events_topic, True, 0,
    )  # fmt: skip
    assert [
        (e["eventId"], e["value"], micros(e["readingTime"]), e["kind"], e["sensorId"], e["metricType"],
         e["threshold"], e["count"])
        for e in summary["events"]
    ] == [
        (event_id, value, time, "EVENT_KIND_THRESHOLD_EXCEEDED", sensor_id, "temperature", 95, 3)
        for event_id, value, time in events
    ]  # fmt: skip
    assert all(micros(e["detectTime"]) >= micros(e["readingTime"]) for e in summary["events"])


async def test_an_mqtt_device_in_typescript_publishes_the_scenario_with_its_own_times(
    clients_built: None, target: Target, db: asyncpg.Pool, sensor_id: str
) -> None:
    # MQTT.js (clients/typescript/src/mqtt-device.ts) on the broker's plaintext port: the scenario,
    # one reading per message, each with its own time: stored as sent, with the events at 99 and 98.
    device = [
        "node",
        str(ROOT / "clients/typescript/dist/mqtt-device.js"),
        "--broker",
        f"mqtt://127.0.0.1:{target.mqtt_port}",
    ]
    code, stdout, stderr = await run(*device, sensor_id)
    assert code == 0, f"mqtt-device exited with {code}:\n{stderr}\n{stdout}"
    summary = json.loads(stdout)
    assert (summary["topic"], summary["reasonCodes"]) == (f"metrics/v1/{sensor_id}", [0] * len(SCENARIO))

    async def stored_once() -> None:
        assert [v for _, v, _ in await stored_readings(db, sensor_id)] == SCENARIO
        assert [v for _, v, _ in await stored_events(db, sensor_id)] == [SCENARIO[i] for i in EVENT_READINGS]

    await eventually(stored_once, what="the scenario stored")
