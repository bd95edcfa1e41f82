"""Threshold rules, exactly as the original system applied them, and the rules made at run time.

A reading that meets a rule's condition (by default value >= threshold) is a warning: its sensor's
counter for that rule goes up by one, and when the counter becomes exactly `count`, one event is
raised carrying that reading. Further warnings keep counting and raise nothing; a reading that does
not meet the condition resets the counter. Several rules may look at one reading: each has its own
counter (Redis field: the rule id, which for the original configuration's rules is the metric type).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from metrics.v1 import event_pb2, rule_pb2

RULE = re.compile(r"(?P<type>[a-z][a-z0-9_.]{0,63}):(?P<threshold>[^:]+):(?P<count>\d+)")
# Namespace of event ids: uuid5(EVENT_NAMESPACE, "<sensor>\0<type>\0<reading time ns>\0<kind>"), and
# "\0<rule id>" after that for a rule made at run time.
EVENT_NAMESPACE = uuid.UUID("6f1c8f0e-6d2a-4c39-9a59-2b8f0c7d1e42")

COMPARE: dict[int, Callable[[float, float], bool]] = {
    rule_pb2.COMPARISON_UNSPECIFIED: operator.ge,
    rule_pb2.COMPARISON_GREATER_OR_EQUAL: operator.ge,
    rule_pb2.COMPARISON_GREATER: operator.gt,
    rule_pb2.COMPARISON_LESS_OR_EQUAL: operator.le,
    rule_pb2.COMPARISON_LESS: operator.lt,
}
SYMBOL: dict[int, str] = {
    rule_pb2.COMPARISON_UNSPECIFIED: ">=",
    rule_pb2.COMPARISON_GREATER_OR_EQUAL: ">=",
    rule_pb2.COMPARISON_GREATER: ">",
    rule_pb2.COMPARISON_LESS_OR_EQUAL: "<=",
    rule_pb2.COMPARISON_LESS: "<",
}


@dataclass(frozen=True)
class Rule:
    metric_type: str
    threshold: float
    count: int
    comparison: int = rule_pb2.COMPARISON_GREATER_OR_EQUAL
    sensor_id_prefix: str = ""
    severity: int = event_pb2.SEVERITY_UNSPECIFIED
    # Empty for a rule of the original configuration: its id, and its counter's name, is the type.
    rule_id: str = ""
    # How long (µs of reading time) the condition must have held since the run's first reading; 0: none.
    duration_us: int = 0
    # Readings in a row that no longer meet the condition that clear the rule's alarm for a sensor;
    # 0 for a rule without alarms (the original configuration's: events only, as they always were).
    clear_count: int = 0
    # A silence rule (no metric type, no threshold): how long (µs) a device it watches may send no
    # reading, and which registered devices it watches (processor/stream/silence.py).
    silence_us: int = 0
    device_id_prefix: str = ""
    device_labels: tuple[tuple[str, str], ...] = ()
    # Worked out once, not per reading (the processor asks them of every reading a rule looks at):
    # the name of its counter and latest-reading time in the sensor's Redis hashes, and what the
    # counter script is told for a warning and for a reset (processor/stream/counters.lua: N, or "N/D"; for a
    # rule with alarms "N/D/M/" and the reading's value).
    field: str = dataclasses.field(init=False, repr=False, compare=False)
    warning_arg: int | str = dataclasses.field(init=False, repr=False, compare=False)
    reset_arg: int | str = dataclasses.field(init=False, repr=False, compare=False)
    _compare: Callable[[float, float], bool] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        held = f"/{self.duration_us}" if self.duration_us else ""
        if self.clear_count:
            held = f"/{self.duration_us}/{self.clear_count}/"
        worked_out = {
            "field": self.rule_id or self.metric_type,
            "warning_arg": f"{self.count}{held}" if held else self.count,
            "reset_arg": f"0{held}" if held else 0,
            "_compare": COMPARE[self.comparison],
        }
        for name, value in worked_out.items():
            object.__setattr__(self, name, value)

    def is_warning(self, value: float) -> bool:
        return self._compare(value, self.threshold)

    def applies_to(self, sensor_id: str) -> bool:
        return sensor_id.startswith(self.sensor_id_prefix)

    def watches(self, device_id: str, labels: Mapping[str, str]) -> bool:
        """A silence rule's choice of devices."""
        return device_id.startswith(self.device_id_prefix) and all(
            labels.get(key) == value for key, value in self.device_labels
        )

    def describe(self) -> str:
        if self.silence_us:
            labels = "".join(f" {k}={v}" for k, v in self.device_labels)
            return f"silent {self.silence_us / 1e6:g} s: devices {self.device_id_prefix}*{labels}"
        where = f" on {self.sensor_id_prefix}*" if self.sensor_id_prefix else ""
        held = f" for {self.duration_us / 1e6:g} s" if self.duration_us else ""
        clears = f", alarm cleared after {self.clear_count}" if self.clear_count else ""
        condition = f"{self.metric_type} {SYMBOL[self.comparison]} {self.threshold:g}"
        return f"{condition} x{self.count}{held}{where}{clears}"

    @classmethod
    def of(cls, rule: rule_pb2.Rule) -> Rule:
        """The rule a processor applies for a stored rule (its id is the metric type for a rule of
        the original configuration, which raises no alarms)."""
        if rule.HasField("silence"):
            return cls(
                "", 0.0, 1, rule_id=rule.rule_id, severity=rule.severity,
                silence_us=rule.silence.after.ToMicroseconds(),
                device_id_prefix=rule.silence.device_id_prefix,
                device_labels=tuple(sorted(rule.silence.device_labels.items())),
            )  # fmt: skip
        configured = rule.rule_id == rule.metric_type
        return cls(
            rule.metric_type,
            rule.threshold,
            rule.count or 1,
            rule.comparison or rule_pb2.COMPARISON_GREATER_OR_EQUAL,
            rule.sensor_id_prefix,
            rule.severity,
            "" if configured else rule.rule_id,
            rule.duration.ToMicroseconds(),
            0 if configured else rule.clear_count or 1,
        )


class RuleBook:
    """The rules in force, found by metric type."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        by_type: dict[str, list[Rule]] = {}
        silence: list[Rule] = []
        for rule in rules:
            if rule.silence_us:
                silence.append(rule)
            else:
                by_type.setdefault(rule.metric_type, []).append(rule)
        self._by_type = {t: tuple(sorted(rs, key=lambda r: r.field)) for t, rs in by_type.items()}
        # The silence rules, which look at devices, not readings' values.
        self.silence = tuple(sorted(silence, key=lambda r: r.rule_id))

    @classmethod
    def of(cls, rules: RuleBook | Mapping[str, Rule] | Iterable[Rule]) -> RuleBook:
        if isinstance(rules, RuleBook):
            return rules
        return cls(rules.values() if isinstance(rules, Mapping) else rules)

    def matching(self, sensor_id: str, metric_type: str) -> Sequence[Rule]:
        """The rules that look at this sensor's readings of this type."""
        rules = self._by_type.get(metric_type, ())
        if len(rules) == 1 and not rules[0].sensor_id_prefix:
            return rules
        return [rule for rule in rules if rule.applies_to(sensor_id)]

    def __iter__(self) -> Iterator[Rule]:
        yield from (rule for rules in self._by_type.values() for rule in rules)
        yield from self.silence


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


def event_id(sensor_id: str, metric_type: str, reading_time_ns: int, kind: int, rule_id: str = "") -> str:
    """The same reading raising the same kind of event for the same rule always gets the same id."""
    name = f"{sensor_id}\0{metric_type}\0{reading_time_ns}\0{kind}" + (f"\0{rule_id}" if rule_id else "")
    return uuid.uuid5(EVENT_NAMESPACE, name).hex
