"""Threshold rules, exactly as the original system applied them.

A reading with value >= threshold is a warning: its sensor's counter for that metric type goes up
by one, and when the counter becomes exactly `count`, one event is raised carrying that reading.
Further warnings keep counting and raise nothing; a reading below the threshold resets the counter.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RULE = re.compile(r"(?P<type>[a-z][a-z0-9_.]{0,63}):(?P<threshold>[^:]+):(?P<count>\d+)")
# Namespace of event ids: uuid5(EVENT_NAMESPACE, "<sensor>\0<type>\0<reading time ns>\0<kind>").
EVENT_NAMESPACE = uuid.UUID("6f1c8f0e-6d2a-4c39-9a59-2b8f0c7d1e42")


@dataclass(frozen=True)
class Rule:
    metric_type: str
    threshold: float
    count: int

    def is_warning(self, value: float) -> bool:
        return value >= self.threshold


def parse_rules(specs: Iterable[str]) -> dict[str, Rule]:
    """Rules by metric type from "type:threshold:count" strings; ValueError names a bad one."""
    rules: dict[str, Rule] = {}
    for spec in specs:
        match = RULE.fullmatch(spec.strip())
        if match is None:
            raise ValueError(f"rule {spec!r} is not type:threshold:count, e.g. temperature:95:3")
        try:
            threshold = float(match["threshold"])
        except ValueError:
            raise ValueError(f"rule {spec!r}: threshold {match['threshold']!r} is not a number") from None
        count = int(match["count"])
        if not math.isfinite(threshold) or count < 1:
            raise ValueError(f"rule {spec!r}: threshold must be finite and count at least 1")
        if match["type"] in rules:
            raise ValueError(f"rule {spec!r}: a second rule for {match['type']!r}")
        rules[match["type"]] = Rule(match["type"], threshold, count)
    return rules


def event_id(sensor_id: str, metric_type: str, reading_time_ns: int, kind: int) -> str:
    """The same reading raising the same kind of event always gets the same id."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{sensor_id}\0{metric_type}\0{reading_time_ns}\0{kind}").hex


def apply(
    counters: dict[tuple[str, str], int],
    rules: Mapping[str, Rule],
    readings: Iterable[tuple[str, str, float]],
) -> list[int]:
    """The reference model: applies (sensor, type, value) readings in order to `counters`.

    Returns the indices of the readings that raised an event. The processor does the same in one
    Redis script per batch (processor/counters.py); tests hold the two against each other.
    """
    raised: list[int] = []
    for i, (sensor_id, metric_type, value) in enumerate(readings):
        rule = rules.get(metric_type)
        if rule is None:
            continue
        key = (sensor_id, metric_type)
        if rule.is_warning(value):
            counters[key] = counters.get(key, 0) + 1
            if counters[key] == rule.count:
                raised.append(i)
        else:
            counters[key] = 0
    return raised


def apply_as_arrived(
    counters: dict[tuple[str, str], int],
    latest: dict[tuple[str, str], int],
    rules: Mapping[str, Rule],
    readings: Iterable[tuple[str, str, float, int]],
) -> list[int]:
    """The model with reading times, (sensor, type, value, time): readings apply in the order they
    arrive, except one not newer than the latest applied to its counter (`latest`), a warning or
    not: a repeat (Kafka's redelivery, a client's resend) or a late reading, it changes nothing.

    Returns the indices of the readings that raised an event.
    """
    raised: list[int] = []
    for i, (sensor_id, metric_type, value, time) in enumerate(readings):
        key = (sensor_id, metric_type)
        if metric_type not in rules or time <= latest.get(key, -1):
            continue
        latest[key] = time
        if apply(counters, rules, [(sensor_id, metric_type, value)]):
            raised.append(i)
    return raised
