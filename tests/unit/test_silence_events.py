"""The events of a silence alarm (processor/stream/silence.py): raised with an id that follows from
the rule, the device and when it was last heard from; cleared as the alarm's transition."""

from __future__ import annotations

from metrics.v1 import event_pb2
from processor.rules import Rule
from processor.stream import alarms
from processor.stream.silence import CLEARED_ENTRY, produced, raised_event

RULE = Rule("", 0.0, 1, severity=event_pb2.SEVERITY_MAJOR, rule_id="r-1", silence_us=900_000_000)
HEARD_US, DETECT_US = 1_796_000_000_000_000, 1_796_000_900_400_000


def test_a_raise_says_when_the_device_was_heard_from_and_when_it_became_silent() -> None:
    event = raised_event(RULE, "plant-7-boiler", HEARD_US, DETECT_US)
    assert (event.kind, event.sensor_id, event.rule_id, event.threshold) == (
        event_pb2.EVENT_KIND_DEVICE_SILENT, "plant-7-boiler", "r-1", 900.0,
    )  # fmt: skip
    assert event.reading_time.ToMicroseconds() == HEARD_US
    assert event.detect_time.ToMicroseconds() == DETECT_US
    alarm = event.alarm
    assert (alarm.alarm_id, alarm.state, alarm.metric_type) == (
        event.event_id,
        event_pb2.ALARM_STATE_ACTIVE,
        "",
    )
    assert alarm.raise_time.ToMicroseconds() == HEARD_US + 900_000_000
    # The same silence raises the same event, whoever raises it and when; the next one another.
    assert raised_event(RULE, "plant-7-boiler", HEARD_US, DETECT_US + 1).event_id == event.event_id
    assert raised_event(RULE, "plant-7-boiler", HEARD_US + 1, DETECT_US).event_id != event.event_id
    assert produced(event.SerializeToString()) == event.SerializeToString()


def test_a_cleared_entry_becomes_the_alarm_s_clearing() -> None:
    raised = raised_event(RULE, "plant-7-boiler", HEARD_US, DETECT_US)
    cleared_us = DETECT_US + 5_000_000
    entry = CLEARED_ENTRY + f"{cleared_us}|rule|".encode() + raised.SerializeToString()
    event = event_pb2.Event.FromString(produced(entry))
    assert (event.kind, event.alarm_id, event.event_id) == (
        event_pb2.EVENT_KIND_ALARM_CLEARED, raised.alarm_id, alarms.transition_id(raised.alarm_id, alarms.CLEARED),
    )  # fmt: skip
    assert (event.alarm.state, event.alarm.cleared_by) == (event_pb2.ALARM_STATE_CLEARED, "rule")
    assert event.alarm.clear_time.ToMicroseconds() == cleared_us
    assert event.sensor_id == "plant-7-boiler"
