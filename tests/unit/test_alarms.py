"""Alarms kept by the counter script, their events, and how the saver merges the events of one."""

from __future__ import annotations

import itertools

from metrics.v1 import event_pb2, metric_pb2
from processor.rules import Rule
from processor.stream import alarms
from processor.stream.rounds import raised_event
from saver import store

RULE = Rule("temperature", 50.0, 2, rule_id="r-1", clear_count=2, severity=event_pb2.SEVERITY_MAJOR)
T0_US = 1_790_000_000_000_000


def raise_event(value: float = 61.0) -> event_pb2.Event:
    metric = metric_pb2.Metric(sensor_id="s-1", metric_type="temperature", value=value)
    metric.reading_time.FromMicroseconds(T0_US)
    detect = metric.reading_time
    return event_pb2.Event.FromString(raised_event(metric, RULE, detect))


def test_the_raising_event_carries_its_alarm_whose_id_is_its_own() -> None:
    event = raise_event()
    assert event.alarm_id == event.event_id == event.alarm.alarm_id
    alarm = event.alarm
    assert (alarm.state, alarm.rule_id, alarm.severity, alarm.raise_value, alarm.match_count) == (
        event_pb2.ALARM_STATE_ACTIVE, "r-1", event_pb2.SEVERITY_MAJOR, 61.0, 1,
    )  # fmt: skip
    assert alarm.raise_time == alarm.last_match_time == event.reading_time


def test_a_cleared_entry_becomes_the_same_event_every_time() -> None:
    raised = raise_event()
    state = b"2|5|63.5|" + str(T0_US + 4).encode() + b"|" + raised.SerializeToString()
    entry = b"cleared|" + str(T0_US + 9).encode() + b"|10.0|" + str(T0_US + 7).encode() + b"|" + state
    produced = alarms.produced(entry)
    assert produced == alarms.produced(entry), "produced again after a crash: the same bytes"
    event = event_pb2.Event.FromString(produced)
    assert (event.kind, event.value, event.reading_time.ToMicroseconds(), event.detect_time.ToMicroseconds()) == (
        event_pb2.EVENT_KIND_ALARM_CLEARED, 10.0, T0_US + 7, T0_US + 9,
    )  # fmt: skip
    assert event.event_id == alarms.transition_id(raised.alarm_id, event_pb2.EVENT_KIND_ALARM_CLEARED)
    assert (event.alarm_id, event.rule_id, event.severity, event.count) == (raised.alarm_id, "r-1", 2, 2)
    alarm = event.alarm
    assert (alarm.state, alarm.cleared_by, alarm.match_count, alarm.last_match_value) == (
        event_pb2.ALARM_STATE_CLEARED, "rule", 5, 63.5,
    )  # fmt: skip
    assert alarm.last_match_time.ToMicroseconds() == T0_US + 4
    assert alarm.clear_time.ToMicroseconds() == T0_US + 7
    assert alarms.produced(raised.SerializeToString()) == raised.SerializeToString()


def test_the_saver_merges_an_alarms_events_in_any_order() -> None:
    raised = raise_event()
    cleared = alarms.cleared(alarms.Active(0, 4, 70.0, T0_US + 5, raised), "rule", 10.0, T0_US + 8, T0_US + 9)
    acknowledged = event_pb2.Alarm()
    acknowledged.CopyFrom(raised.alarm)
    acknowledged.match_count = 3
    acknowledged.last_match_value = 65.0
    acknowledged.last_match_time.FromMicroseconds(T0_US + 3)
    acknowledged.acknowledged = True
    acknowledged.acknowledged_by = "operator-7"
    acknowledged.acknowledge_time.FromMicroseconds(T0_US + 4)
    ack_event = alarms.transition(acknowledged, alarms.ACKNOWLEDGED, 65.0, T0_US + 4, T0_US + 4)
    rows = [store.event_row(e) for e in (raised, cleared, ack_event)]
    merged = {tuple(store.alarm_rows(list(order))) for order in itertools.permutations(rows)}
    assert len(merged) == 1, "the same row whatever the order"
    ((row,),) = merged
    assert (row.match_count, row.last_match_value, row.last_match_time) == (4, 70.0, T0_US + 5)
    assert (row.clear_time, row.cleared_by) == (T0_US + 8, "rule")
    assert (row.acknowledge_time, row.acknowledged_by) == (T0_US + 4, "operator-7")
    assert store.alarm_rows([store.event_row(raise_event())])[0].clear_time is None
