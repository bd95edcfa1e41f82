"""Alarms: what the counter script keeps of an active one, and the events of its changes.

The script (processor/stream/counters.py) keeps a sensor's active alarm of a rule in `alarms:{<sensor>}`
as "<consecutive clears>|<matches>|<latest matching value>|<its time µs>|<raising event>", and when
a rule's clear condition is met stores "cleared|<detect µs>|<value>|<time µs>|" and that state in
the pending list. Such an entry becomes its event here, when it is produced: deterministically, so
an entry produced again after a crash is the same event, with the same id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from metrics.v1 import event_pb2
from processor.rules import EVENT_NAMESPACE

CLEARED = event_pb2.EVENT_KIND_ALARM_CLEARED
ACKNOWLEDGED = event_pb2.EVENT_KIND_ALARM_ACKNOWLEDGED
CLEARED_ENTRY = b"cleared|"
# Who cleared an alarm by its rule's clear condition (Alarm.cleared_by).
BY_RULE = "rule"


@dataclass(frozen=True)
class Active:
    """An active alarm as the counter script keeps it."""

    clears: int
    matches: int
    last_value: float
    last_time_us: int
    raised_by: event_pb2.Event

    @classmethod
    def parse(cls, state: bytes) -> Active:
        clears, matches, last_value, last_time, raised_by = state.split(b"|", 4)
        event = event_pb2.Event.FromString(raised_by)
        return cls(int(clears), int(matches), float(last_value), int(last_time), event)

    @property
    def alarm_id(self) -> str:
        return self.raised_by.alarm_id

    def alarm(self) -> event_pb2.Alarm:
        """The alarm as it is now."""
        alarm = event_pb2.Alarm()
        alarm.CopyFrom(self.raised_by.alarm)
        alarm.match_count = self.matches
        alarm.last_match_value = self.last_value
        alarm.last_match_time.FromMicroseconds(self.last_time_us)
        return alarm


def raised(event: event_pb2.Event) -> None:
    """Makes the event a rule with alarms raises the raise of its alarm: the alarm's id is the
    event's, and the event carries the alarm as it starts."""
    event.alarm_id = event.event_id
    alarm = event.alarm
    alarm.alarm_id = event.event_id
    alarm.sensor_id = event.sensor_id
    alarm.rule_id = event.rule_id
    alarm.metric_type = event.metric_type
    alarm.severity = event.severity
    alarm.threshold = event.threshold
    alarm.state = event_pb2.ALARM_STATE_ACTIVE
    alarm.raise_time.CopyFrom(event.reading_time)
    alarm.raise_value = event.value
    alarm.match_count = 1
    alarm.last_match_time.CopyFrom(event.reading_time)
    alarm.last_match_value = event.value


def transition_id(alarm_id: str, kind: int) -> str:
    """An alarm is cleared once and acknowledged once: the id of each event follows from the alarm's,
    whoever makes it and however often (a retried call, a clear by hand racing its rule's)."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{alarm_id}\0{kind}").hex


def transition(
    alarm: event_pb2.Alarm, kind: int, value: float, time_us: int, detect_us: int
) -> event_pb2.Event:
    """The event of an alarm's change (cleared or acknowledged), carrying the alarm as it became."""
    event = event_pb2.Event(
        event_id=transition_id(alarm.alarm_id, kind), kind=kind, sensor_id=alarm.sensor_id,  # type: ignore[arg-type]
        metric_type=alarm.metric_type, value=value, threshold=alarm.threshold, severity=alarm.severity,
        rule_id=alarm.rule_id, alarm_id=alarm.alarm_id, alarm=alarm,
    )  # fmt: skip
    event.reading_time.FromMicroseconds(time_us)
    event.detect_time.FromMicroseconds(detect_us)
    return event


def cleared(active: Active, by: str, value: float, time_us: int, detect_us: int) -> event_pb2.Event:
    alarm = active.alarm()
    alarm.state = event_pb2.ALARM_STATE_CLEARED
    alarm.clear_time.FromMicroseconds(time_us)
    alarm.cleared_by = by
    event = transition(alarm, CLEARED, value, time_us, detect_us)
    event.count = active.raised_by.count
    return event


def produced(entry: bytes) -> bytes:
    """What a pending entry is on the events topic: an event as it was stored, or the event of an
    alarm cleared by its rule."""
    if not entry.startswith(CLEARED_ENTRY):
        return entry
    detect, value, time, state = entry[len(CLEARED_ENTRY) :].split(b"|", 3)
    event = cleared(Active.parse(state), BY_RULE, float(value), int(time), int(detect))
    return event.SerializeToString()
