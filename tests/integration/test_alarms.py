"""Alarms of rules made at run time (AlarmsService through Envoy): raised by the rule's event, updated
while active, cleared by the rule's clear condition or by hand, acknowledged; every change an event,
stored, listed and watched; the script's alarms held to the model (processor/rules.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest

from metrics.v1 import assessor_service_pb2, event_pb2
from metrics.v1.assessor_service_pb2_grpc import AssessorServiceStub
from processor.rules import Rule
from testkit.http import http
from testkit.rules_model import apply_as_arrived
from tests import front_door
from tests.helpers import eventually, rfc3339, send
from tests.target import Target

# RulesService promises a change applies within this long of its acknowledgement.
APPLIED_WITHIN_S = 1.0
RAISED = event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
CLEARED = event_pb2.EVENT_KIND_ALARM_CLEARED
ACKNOWLEDGED = event_pb2.EVENT_KIND_ALARM_ACKNOWLEDGED

Rules = Callable[..., Awaitable[dict[str, Any]]]


async def alarm_rule(rules: Rules, sensor_id: str, **fields: Any) -> dict[str, Any]:
    """temperature >= 50 twice in a row, for the test's sensor; applied once this returns."""
    made = await rules(
        **{"metricType": "temperature", "sensorIdPrefix": sensor_id, "threshold": 50, "count": 2, **fields}
    )
    await asyncio.sleep(APPLIED_WITHIN_S)  # the documented bound
    return made


async def alarms_of(target: Target, query: str) -> dict[str, Any]:
    status, body = await http("GET", f"{target.envoy_url}/v1/alarms?{query}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def listed(target: Target, sensor_id: str, count: int, query: str = "") -> list[dict[str, Any]]:
    """The sensor's alarms, most recent first, once there are `count` (in the state `query` asks)."""

    async def found() -> list[dict[str, Any]]:
        alarms = (await alarms_of(target, f"sensorId={sensor_id}{query}"))["alarms"]
        assert len(alarms) == count, alarms
        return alarms  # type: ignore[no-any-return]

    return await eventually(found, timeout=10, what=f"{count} alarm(s) listed")


async def stored_events(db: asyncpg.Pool, sensor_id: str, count: int) -> list[event_pb2.Event]:
    """The sensor's events as the saver stored them (with their alarms), once there are `count`."""

    async def stored() -> list[event_pb2.Event]:
        rows = await db.fetch(
            "SELECT event_id, kind, value, alarm_id, alarm FROM events WHERE sensor_id = $1 "
            "ORDER BY reading_time, kind",
            sensor_id,
        )
        assert len(rows) == count, [(r["kind"], r["value"]) for r in rows]
        return [
            event_pb2.Event(
                event_id=r["event_id"].hex, kind=r["kind"], value=r["value"], alarm_id=r["alarm_id"],
                alarm=event_pb2.Alarm.FromString(r["alarm"]) if r["alarm"] is not None else None,
            )
            for r in rows
        ]  # fmt: skip

    return await eventually(stored, timeout=10, what=f"{count} event(s) stored")


async def test_an_alarm_is_raised_updated_and_cleared_by_its_rule(
    target: Target, db: asyncpg.Pool, rules: Rules, sensor_id: str, envoy_channel: grpc.aio.Channel
) -> None:
    rule = await alarm_rule(rules, sensor_id, clearCount=2, severity="SEVERITY_MAJOR")
    values = (60, 61, 62, 10, 63, 10, 11, 64, 65)
    # What the model says: raised at 61, updated by 62 and 63 (the 10 between them is one clear, not
    # two), cleared at 11, raised again at 65.
    cleared: list[int] = []
    model = Rule("temperature", 50, 2, sensor_id_prefix=sensor_id, rule_id=rule["ruleId"], clear_count=2)
    timed = [(sensor_id, "temperature", float(v), i) for i, v in enumerate(values)]
    raised = apply_as_arrived({}, {}, [model], timed, cleared=cleared)
    assert (raised, cleared) == ([1, 8], [6])

    watch = AssessorServiceStub(envoy_channel).WatchEvents(
        assessor_service_pb2.WatchEventsRequest(sensor_id=sensor_id), timeout=30
    )
    await watch.initial_metadata()  # the subscription is live
    await send(target.envoy_url, sensor_id, "temperature", *values)

    newest, first = await listed(target, sensor_id, 2)
    assert first["ruleId"] == rule["ruleId"] and first["severity"] == "SEVERITY_MAJOR"
    assert (first["state"], first["clearedBy"], first["raiseValue"], first["matchCount"]) == (
        "ALARM_STATE_CLEARED", "rule", 61, "3",
    )  # fmt: skip
    assert (first["lastMatchValue"], first["threshold"], first["acknowledged"]) == (63, 50, False)
    assert first["clearTime"] > first["lastMatchTime"] > first["raiseTime"]
    assert (newest["state"], newest["raiseValue"], newest["matchCount"]) == ("ALARM_STATE_ACTIVE", 65, "1")
    assert "clearTime" not in newest and newest["alarmId"] != first["alarmId"]

    events = await stored_events(db, sensor_id, 3)
    assert [(e.kind, e.value) for e in events] == [(RAISED, 61), (CLEARED, 11), (RAISED, 65)]
    assert [e.alarm_id for e in events] == [first["alarmId"], first["alarmId"], newest["alarmId"]]
    assert events[0].event_id == first["alarmId"], "an alarm's id is its raising event's"
    assert events[1].alarm.state == event_pb2.ALARM_STATE_CLEARED and events[1].alarm.match_count == 3

    watched = []
    async for reply in watch:
        watched.append((reply.event.kind, reply.event.alarm_id, reply.event.alarm.state))
        if len(watched) == 3:
            break
    watch.cancel()
    assert watched == [
        (RAISED, first["alarmId"], event_pb2.ALARM_STATE_ACTIVE),
        (CLEARED, first["alarmId"], event_pb2.ALARM_STATE_CLEARED),
        (RAISED, newest["alarmId"], event_pb2.ALARM_STATE_ACTIVE),
    ]


async def test_an_active_alarm_shows_every_match_and_raises_no_other(
    target: Target, rules: Rules, sensor_id: str
) -> None:
    await alarm_rule(rules, sensor_id, clearCount=3)
    # Two runs of warnings with a reading below between them: with clearCount 3 it does not clear,
    # so the second run, which would raise an event of its own, updates the alarm. Its matches: the
    # raising reading (71) and every warning after it.
    await send(target.envoy_url, sensor_id, "temperature", 70, 71, 72, 10, 73, 74, 75)

    async def updated() -> dict[str, Any]:
        alarms = (await alarms_of(target, f"sensorId={sensor_id}"))["alarms"]
        assert [(a["matchCount"], a["lastMatchValue"]) for a in alarms] == [("5", 75)], alarms
        return alarms[0]  # type: ignore[no-any-return]

    alarm = await eventually(updated, timeout=10, what="the alarm updated by five matches")
    assert (alarm["state"], alarm["raiseValue"]) == ("ALARM_STATE_ACTIVE", 71)
    status, one = await http("GET", f"{target.envoy_url}/v1/alarms/{alarm['alarmId']}")
    assert status == 200 and one == alarm


async def test_acknowledging_an_alarm_is_recorded_once_and_filters_by_it(
    target: Target, db: asyncpg.Pool, rules: Rules, sensor_id: str
) -> None:
    await alarm_rule(rules, sensor_id, severity="SEVERITY_CRITICAL")
    await send(target.envoy_url, sensor_id, "temperature", 80, 81)
    (alarm,) = await listed(target, sensor_id, 1)
    assert (await alarms_of(target, f"sensorId={sensor_id}&acknowledged=true"))["alarms"] == []

    url = f"{target.envoy_url}/v1/alarms/{alarm['alarmId']}:acknowledge"
    status, acknowledged = await http("POST", url, {})
    assert status == 200, acknowledged
    assert (acknowledged["acknowledged"], acknowledged["acknowledgedBy"]) == (True, "local")
    assert acknowledged["state"] == "ALARM_STATE_ACTIVE", "acknowledging does not clear"
    status, again = await http("POST", url, {})
    assert status == 200 and again["acknowledgeTime"] == acknowledged["acknowledgeTime"]

    for query, expected in [
        ("acknowledged=true", [alarm["alarmId"]]),
        ("acknowledged=false", []),
        ("state=ALARM_STATE_ACTIVE&severity=SEVERITY_CRITICAL", [alarm["alarmId"]]),
        ("state=ALARM_STATE_CLEARED", []),
        ("severity=SEVERITY_MINOR", []),
    ]:
        found = (await alarms_of(target, f"sensorId={sensor_id}&{query}"))["alarms"]
        assert [a["alarmId"] for a in found] == expected, query
    events = await stored_events(db, sensor_id, 2)
    assert [e.kind for e in events] == [RAISED, ACKNOWLEDGED]
    assert (
        events[1].alarm.acknowledged_by == "local" and events[1].alarm.state == event_pb2.ALARM_STATE_ACTIVE
    )


async def test_clearing_by_hand_ends_the_alarm_and_the_rule_counts_afresh(
    target: Target, db: asyncpg.Pool, rules: Rules, sensor_id: str
) -> None:
    await alarm_rule(rules, sensor_id, clearCount=5)
    await send(target.envoy_url, sensor_id, "temperature", 90, 91, 92)
    (alarm,) = await listed(target, sensor_id, 1)
    url = f"{target.envoy_url}/v1/alarms/{alarm['alarmId']}:clear"
    status, cleared = await http("POST", url, {})
    assert status == 200, cleared
    assert (cleared["state"], cleared["clearedBy"], cleared["matchCount"]) == (
        "ALARM_STATE_CLEARED",
        "local",
        "2",
    )
    status, again = await http("POST", url, {})
    assert status == 200 and again["clearTime"] == cleared["clearTime"]
    # Still over the threshold: the counter started again at the clear, so the second reading after
    # it raises a new alarm (without the restart, this run had raised its one event already).
    await send(target.envoy_url, sensor_id, "temperature", 93, 94)
    newest, first = await listed(target, sensor_id, 2)
    assert first["alarmId"] == alarm["alarmId"] and first["state"] == "ALARM_STATE_CLEARED"
    assert (newest["state"], newest["raiseValue"]) == ("ALARM_STATE_ACTIVE", 94)
    events = await stored_events(db, sensor_id, 3)
    assert [(e.kind, e.alarm_id) for e in events] == [
        (RAISED, alarm["alarmId"]), (CLEARED, alarm["alarmId"]), (RAISED, newest["alarmId"]),
    ]  # fmt: skip
    assert events[1].alarm.cleared_by == "local"


async def test_alarms_are_paged_and_filtered_by_raise_time(
    target: Target, rules: Rules, sensor_id: str
) -> None:
    await alarm_rule(rules, sensor_id)
    start = time.time() - 10
    # Three alarms, each cleared by the reading below (clearCount 1), a second apart.
    for i in range(3):
        await send(target.envoy_url, sensor_id, "temperature", 60, 61, 10, start=start + i)
    alarms = await listed(target, sensor_id, 3)
    assert [a["raiseValue"] for a in alarms] == [61, 61, 61]
    assert [a["raiseTime"] for a in alarms] == sorted((a["raiseTime"] for a in alarms), reverse=True)
    page = await alarms_of(target, f"sensorId={sensor_id}&pageSize=2")
    assert [a["alarmId"] for a in page["alarms"]] == [a["alarmId"] for a in alarms[:2]]
    rest = await alarms_of(target, f"sensorId={sensor_id}&pageSize=2&pageToken={page['nextPageToken']}")
    assert [a["alarmId"] for a in rest["alarms"]] == [alarms[2]["alarmId"]] and rest["nextPageToken"] == ""
    window = f"startTime={rfc3339(start + 0.5)}&endTime={rfc3339(start + 1.5)}"
    assert [a["alarmId"] for a in (await alarms_of(target, f"sensorId={sensor_id}&{window}"))["alarms"]] == [
        alarms[1]["alarmId"]
    ]
    status, body = await http(
        "GET", f"{target.envoy_url}/v1/alarms?pageSize=2&pageToken={page['nextPageToken']}"
    )
    assert status == 400 and "page_token" in body["message"], body


async def test_alarms_are_filtered_by_rule_and_sensor_prefix_and_counted_by_severity(
    target: Target, rules: Rules, sensor_id: str
) -> None:
    hot = await alarm_rule(rules, sensor_id, severity="SEVERITY_CRITICAL")
    wet = await alarm_rule(rules, sensor_id, metricType="humidity", severity="SEVERITY_MINOR")
    # Two sensors under the test's prefix raise the critical rule's alarm, one the minor rule's.
    for sensor, metric_type in ((f"{sensor_id}-a", "temperature"), (f"{sensor_id}-b", "temperature"),
                                (f"{sensor_id}-b", "humidity")):  # fmt: skip
        await send(target.envoy_url, sensor, metric_type, 60, 61)

    async def all_listed() -> dict[str, Any]:
        body = await alarms_of(target, f"sensorIdPrefix={sensor_id}-&countBySeverity=true")
        assert len(body["alarms"]) == 3, body
        return body

    every = await eventually(all_listed, timeout=10, what="3 alarms listed")
    assert every["severityCounts"] == [
        {"severity": "SEVERITY_CRITICAL", "count": "2"},
        {"severity": "SEVERITY_MINOR", "count": "1"},
    ]
    by_rule = await alarms_of(target, f"sensorIdPrefix={sensor_id}-&ruleId={wet['ruleId']}")
    assert [(a["sensorId"], a["ruleId"]) for a in by_rule["alarms"]] == [(f"{sensor_id}-b", wet["ruleId"])]
    assert by_rule["severityCounts"] == []  # not asked for
    # The counts ignore the severity filter (the page's tabs), not the others.
    critical = await alarms_of(
        target, f"sensorIdPrefix={sensor_id}-a&severity=SEVERITY_CRITICAL&countBySeverity=true"
    )
    assert [(a["sensorId"], a["ruleId"]) for a in critical["alarms"]] == [(f"{sensor_id}-a", hot["ruleId"])]
    assert critical["severityCounts"] == [{"severity": "SEVERITY_CRITICAL", "count": "1"}]
    minor_only = await alarms_of(
        target, f"sensorIdPrefix={sensor_id}-a&severity=SEVERITY_MINOR&countBySeverity=true"
    )
    assert minor_only["alarms"] == [] and minor_only["severityCounts"] == critical["severityCounts"]


@pytest.mark.parametrize(
    ("path", "status", "named"),
    [
        ("/v1/alarms/not-an-alarm", 400, "alarm_id"),
        ("/v1/alarms/" + "0" * 32, 404, "no alarm"),
        ("/v1/alarms?pageSize=-1", 400, "page_size"),
    ],
)
async def test_a_bad_request_is_refused_naming_the_problem(
    target: Target, path: str, status: int, named: str
) -> None:
    got, body = await http("GET", target.envoy_url + path)
    assert (got, named in body["message"]) == (status, True), body


async def test_acknowledging_or_clearing_takes_an_admin_token_on_the_tls_port(
    target: Target, rules: Rules, sensor_id: str
) -> None:
    await alarm_rule(rules, sensor_id)
    await send(target.envoy_url, sensor_id, "temperature", 60, 61)
    (alarm,) = await listed(target, sensor_id, 1)
    reader = front_door.auth(front_door.token(target, scopes=("read",)))
    admin = front_door.auth(front_door.token(target, scopes=("admin",), subject="operator-7"))
    base = f"{target.envoy_tls_url}/v1/alarms"
    tls = front_door.tls_context(target)
    status, body = await http("GET", f"{base}?sensorId={sensor_id}", headers=reader, tls=tls)
    assert status == 200 and [a["alarmId"] for a in body["alarms"]] == [alarm["alarmId"]]
    for action in ("acknowledge", "clear"):
        status, body = await http("POST", f"{base}/{alarm['alarmId']}:{action}", {}, headers=reader, tls=tls)
        assert status == 403 and "do not include admin" in body["message"], body
    status, body = await http("POST", f"{base}/{alarm['alarmId']}:acknowledge", {}, headers=admin, tls=tls)
    assert status == 200 and body["acknowledgedBy"] == "operator-7", body
