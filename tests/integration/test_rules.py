"""Rules changed at run time (RulesService through Envoy): stored, validated naming the field,
applied by the processor within a second of the acknowledgement, several per reading, each reading
counted once per rule however the rule changes meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from google.protobuf import duration_pb2

from metrics.v1 import event_pb2, rule_pb2
from processor.rules import Rule
from testkit.http import http
from testkit.rules_model import apply_as_arrived
from tests import front_door
from tests.helpers import eventually, rfc3339, send
from tests.target import Target

# RulesService promises a change applies within this long of its acknowledgement.
APPLIED_WITHIN_S = 1.0


async def events_of(db: asyncpg.Pool, sensor: str) -> list[asyncpg.Record]:
    return await db.fetch(  # type: ignore[no-any-return]
        "SELECT rule_id, severity, value, threshold, count FROM events WHERE sensor_id = $1 AND kind = $2 "
        "ORDER BY reading_time",
        sensor,
        event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED,
    )


async def test_a_rule_made_at_run_time_raises_events_within_a_second(
    target: Target, db: asyncpg.Pool, rules: Any, sensor_id: str
) -> None:
    rule = await rules(
        metricType="pressure", sensorIdPrefix=sensor_id, threshold=2.5, comparison="COMPARISON_LESS",
        count=2, severity="SEVERITY_CRITICAL",
    )  # fmt: skip
    acknowledged = time.monotonic()
    assert rule["ruleId"].startswith("r-") and rule["version"] == "1" and rule["enabled"] is True
    # The documented bound, then readings: two below 2.5 in a row raise one event.
    await asyncio.sleep(max(0.0, acknowledged + APPLIED_WITHIN_S - time.monotonic()))
    await send(target.envoy_url, sensor_id, "pressure", 3.0, 2.0, 1.9, 1.8)

    async def raised() -> None:
        rows = await events_of(db, sensor_id)
        assert [(r["rule_id"], r["severity"], r["value"], r["count"]) for r in rows] == [
            (rule["ruleId"], 1, 1.9, 2)
        ]

    await eventually(raised, timeout=10, what="the rule's event")
    window = f"startTime={rfc3339(time.time() - 3600)}&endTime={rfc3339(time.time() + 60)}"
    status, body = await http("GET", f"{target.envoy_url}/v1/events?sensorId={sensor_id}&{window}")
    assert status == 200, body
    assert [(e["ruleId"], e["severity"]) for e in body["events"]] == [(rule["ruleId"], "SEVERITY_CRITICAL")]


async def test_several_rules_look_at_one_reading_each_with_its_own_counter(
    target: Target, db: asyncpg.Pool, rules: Any, sensor_id: str
) -> None:
    high = await rules(metricType="vibration", sensorIdPrefix=sensor_id, threshold=10, count=3)
    higher = await rules(metricType="vibration", sensorIdPrefix=sensor_id, threshold=20, count=2)
    await asyncio.sleep(APPLIED_WITHIN_S)  # the documented bound
    # 15, 25, 25: three over 10 (one event of `high`), two over 20 (one of `higher`).
    await send(target.envoy_url, sensor_id, "vibration", 15, 25, 25)

    async def raised() -> None:
        rows = await events_of(db, sensor_id)
        assert sorted((r["rule_id"], r["value"]) for r in rows) == sorted(
            [(high["ruleId"], 25.0), (higher["ruleId"], 25.0)]
        )

    await eventually(raised, timeout=10, what="an event of each rule")


async def test_a_disabled_or_deleted_rule_raises_nothing_more(
    target: Target, db: asyncpg.Pool, rules: Any, sensor_id: str
) -> None:
    quiet = await rules(metricType="noise", sensorIdPrefix=sensor_id, threshold=1, count=1)
    marker = await rules(metricType="marker", sensorIdPrefix=sensor_id, threshold=1, count=1)
    status, body = await http(
        "PATCH", f"{target.envoy_url}/v1/rules/{quiet['ruleId']}?updateMask=enabled", {"enabled": False}
    )
    assert status == 200 and body["enabled"] is False and body["version"] == "2", body
    await asyncio.sleep(APPLIED_WITHIN_S)
    await send(target.envoy_url, sensor_id, "noise", 5)
    # After the noise: once the marker's event is stored, so would be the noise's.
    await send(target.envoy_url, sensor_id, "marker", 5)

    async def marked() -> None:
        assert [r["rule_id"] for r in await events_of(db, sensor_id)] == [marker["ruleId"]]

    await eventually(marked, timeout=10, what="the marker's event alone")
    status, _ = await http("DELETE", f"{target.envoy_url}/v1/rules/{marker['ruleId']}")
    assert status == 200
    status, body = await http("GET", f"{target.envoy_url}/v1/rules/{marker['ruleId']}")
    assert status == 404 and "no rule" in body["message"]


async def test_rules_are_stored_listed_and_changed_with_versions(
    target: Target, rules: Any, sensor_id: str
) -> None:
    made = [await rules(metricType="flow", sensorIdPrefix=f"{sensor_id}-{i}", threshold=i) for i in range(3)]
    listed: list[str] = []
    token = ""
    while True:
        status, body = await http(
            "GET", f"{target.envoy_url}/v1/rules?metricType=flow&pageSize=2&pageToken={token}"
        )
        assert status == 200, body
        listed += [r["ruleId"] for r in body["rules"]]
        token = body["nextPageToken"]
        if not token:
            break
    assert [r["ruleId"] for r in made] == [r for r in listed if r in {m["ruleId"] for m in made}]
    url = f"{target.envoy_url}/v1/rules/{made[0]['ruleId']}"
    status, body = await http("PATCH", url, {"threshold": 7.5, "version": "1"})
    assert status == 200 and body["threshold"] == 7.5 and body["version"] == "2", body
    status, body = await http("PATCH", url, {"threshold": 8, "version": "1"})
    assert status == 409 and "is at version 2, not 1" in body["message"], body
    status, body = await http("GET", url)
    assert status == 200 and body["threshold"] == 7.5


@pytest.mark.parametrize(
    ("rule", "field", "problem"),
    [
        ({"threshold": 1}, "rule.metric_type", "is required"),
        ({"metricType": "Flow", "threshold": 1}, "rule.metric_type", "is not a metric type"),
        ({"metricType": "flow", "threshold": 1, "count": 1001}, "rule.count", "from 1 to 1,000"),
        (
            {"metricType": "flow", "threshold": 1, "sensorIdPrefix": "a b"},
            "rule.sensor_id_prefix",
            "the start of a sensor id",
        ),
        ({"metricType": "flow", "threshold": 1e200}, "rule.threshold", "finite number within"),
        ({"metricType": "flow", "threshold": 1, "severity": 9}, "rule.severity", "is not a severity"),
        ({"metricType": "flow", "threshold": 1, "duration": "-1s"}, "rule.duration", "from 0s to 7 days"),
        (
            {"metricType": "flow", "threshold": 1, "duration": "0.0000001s"},
            "rule.duration",
            "whole microseconds",
        ),
    ],
)
async def test_a_bad_rule_is_refused_naming_the_field(
    target: Target, rule: dict[str, Any], field: str, problem: str
) -> None:
    status, body = await http("POST", f"{target.envoy_url}/v1/rules", rule)
    assert status == 400, body
    violations = body["details"][0]["fieldViolations"]
    assert [v["field"] for v in violations] == [field]
    assert problem in violations[0]["description"]


async def test_changing_rules_takes_an_admin_token_on_the_tls_port(target: Target, rules: Any) -> None:
    tls = front_door.tls_context(target)
    url = f"{target.envoy_tls_url}/v1/rules"
    reader = front_door.auth(front_door.token(target, scopes=("read",)))
    status, body = await http("GET", url, headers=reader, tls=tls)
    assert status == 200, body
    status, body = await http("POST", url, {"metricType": "flow", "threshold": 1}, headers=reader, tls=tls)
    assert status == 403 and "do not include admin" in body["message"], body
    admin = front_door.auth(front_door.token(target, scopes=("admin",)))
    status, body = await http("POST", url, {"metricType": "flow", "threshold": 1}, headers=admin, tls=tls)
    assert status == 200, body
    status, _ = await http("DELETE", f"{url}/{body['ruleId']}", headers=admin, tls=tls)
    assert status == 200


async def test_readings_are_counted_once_while_their_rule_changes(
    target: Target, db: asyncpg.Pool, rules: Any, sensor_id: str
) -> None:
    # Three warnings and a reset, 100 times: one event per four readings, whatever the rule's
    # severity was when each was counted (changed ten times meanwhile, its condition never).
    rule = await rules(metricType="load", sensorIdPrefix=sensor_id, threshold=10, count=3)
    await asyncio.sleep(APPLIED_WITHIN_S)
    url = f"{target.envoy_url}/v1/rules/{rule['ruleId']}?updateMask=severity"

    async def change() -> None:
        for i in range(10):
            status, body = await http("PATCH", url, {"severity": 1 + i % 4})
            assert status == 200, body

    async def readings() -> None:
        # Times in order across the batches: a reading older than one applied would be skipped.
        start = time.time() - 10
        for batch in range(20):
            await send(
                target.envoy_url, sensor_id, "load", *[11, 12, 13, 1] * 5, start=start + batch * 20 / 1000
            )

    await asyncio.gather(change(), readings())

    async def counted() -> None:
        rows = await events_of(db, sensor_id)
        assert len(rows) == 100 and {r["value"] for r in rows} == {13.0}

    await eventually(counted, timeout=20, what="one event per run of three")


async def test_a_rule_with_a_duration_raises_once_the_condition_has_held_that_long(
    target: Target, db: asyncpg.Pool, rules: Any, sensor_id: str
) -> None:
    made = await rules(metricType="heat", sensorIdPrefix=sensor_id, threshold=50, count=2, duration="2s")
    assert made["duration"] == "2s"
    await asyncio.sleep(APPLIED_WITHIN_S)
    # (seconds after t0, value): a run held 1.5 s (nothing), then one held 2 s from its first
    # warning with at least 2 warnings (an event at its 2.0 s reading, one only), then a run of one
    # warning held long enough but under the count until its second warning.
    readings = [(0, 60), (1, 61), (1.5, 62), (2, 10), (3, 63), (4, 64), (5, 65), (6, 10), (7, 66), (20, 67)]
    t0 = time.time() - 60
    metrics = [
        {"sensorId": sensor_id, "metricType": "heat", "value": v, "readingTime": rfc3339(t0 + s)}
        for s, v in readings
    ]
    status, body = await http("POST", f"{target.envoy_url}/v1/metrics:push", {"metrics": metrics})
    assert status == 200, body
    # The model of the rule (processor/rules.py) says which readings raise; the Redis script must agree.
    rule = Rule.of(rule_pb2.Rule(rule_id=made["ruleId"], metric_type="heat", threshold=50, count=2,
                                 duration=duration_pb2.Duration(seconds=2)))  # fmt: skip
    timed = [(sensor_id, "heat", float(v), int((t0 + s) * 1e6)) for s, v in readings]
    expected = [timed[i][2] for i in apply_as_arrived({}, {}, [rule], timed)]
    assert expected == [65.0, 67.0]

    async def raised() -> None:
        assert [r["value"] for r in await events_of(db, sensor_id)] == expected

    await eventually(raised, timeout=10, what="the events of the rule with a duration")
