"""What a rule must be, at the API and on the rules topic alike; each problem names its field."""

from __future__ import annotations

import math

from metrics.v1 import event_pb2, rule_pb2
from runtime.errors import Violation
from runtime.validation import MAX_ABS_VALUE, METRIC_TYPE, SENSOR_ID

MAX_COUNT = 1_000
MAX_PREFIX = 128
MAX_DURATION_US = 7 * 24 * 3600 * 1_000_000


MIN_SILENCE_S, MAX_SILENCE_S = 10, 7 * 24 * 3600
MAX_LABEL = 63


def violations(rule: rule_pb2.Rule, prefix: str = "rule.") -> list[Violation]:
    found = silence_violations(rule) if rule.HasField("silence") else threshold_violations(rule)
    if rule.severity not in event_pb2.Severity.values():
        found.append(("severity", f"{rule.severity} is not a severity (SEVERITY_CRITICAL, ...)"))
    return [Violation(prefix + field, problem) for field, problem in found]


def silence_violations(rule: rule_pb2.Rule) -> list[tuple[str, str]]:
    """A silence rule: its own fields, and none of a threshold rule's."""
    found: list[tuple[str, str]] = []
    add = found.append
    silence = rule.silence
    after = silence.after
    if not silence.HasField("after"):
        add(("silence.after", f"is required: how long a device may stay silent, {MIN_SILENCE_S}s to 7 days"))
    elif after.nanos or not MIN_SILENCE_S <= after.seconds <= MAX_SILENCE_S:
        add(("silence.after", f"must be whole seconds from {MIN_SILENCE_S}s to 7 days (604800s), "
             f"got {after.ToJsonString()}"))  # fmt: skip
    if silence.device_id_prefix and (
        len(silence.device_id_prefix) > MAX_PREFIX or not SENSOR_ID.fullmatch(silence.device_id_prefix)
    ):
        add(
            ("silence.device_id_prefix", "must be the start of a device id: up to 128 of A-Z a-z 0-9 . _ : -")
        )
    for key in sorted(silence.device_labels):
        if not key or len(key) > MAX_LABEL or "=" in key:
            add(
                (
                    f"silence.device_labels[{key[:40]!r}]",
                    f"key must be 1 to {MAX_LABEL} characters without '='",
                )
            )
    for name in ("metric_type", "sensor_id_prefix", "threshold", "comparison", "count", "clear_count"):
        if getattr(rule, name):
            add((name, "is not for a silence rule: leave it unset (the rule watches devices, not values)"))
    if rule.HasField("duration"):
        add(("duration", "is not for a silence rule: silence.after says how long"))
    return found


def threshold_violations(rule: rule_pb2.Rule) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    add = found.append
    if not rule.metric_type:
        add(("metric_type", "is required, e.g. temperature"))
    elif not METRIC_TYPE.fullmatch(rule.metric_type):
        add(("metric_type", f"{rule.metric_type[:70]!r} is not a metric type ([a-z][a-z0-9_.]{{0,63}})"))
    if rule.sensor_id_prefix and (
        len(rule.sensor_id_prefix) > MAX_PREFIX or not SENSOR_ID.fullmatch(rule.sensor_id_prefix)
    ):
        add(("sensor_id_prefix", "must be the start of a sensor id: up to 128 of A-Z a-z 0-9 . _ : -"))
    if not math.isfinite(rule.threshold) or abs(rule.threshold) > MAX_ABS_VALUE:
        add(("threshold", f"must be a finite number within ±{MAX_ABS_VALUE:g}, got {rule.threshold}"))
    if rule.comparison not in rule_pb2.Comparison.values():
        add(("comparison", f"{rule.comparison} is not a comparison (COMPARISON_GREATER_OR_EQUAL, ...)"))
    if not 0 <= rule.count <= MAX_COUNT:
        add(("count", f"must be from 1 to {MAX_COUNT:,} (0 for 1), got {rule.count}"))
    if not 0 <= rule.clear_count <= MAX_COUNT:
        add(("clear_count", f"must be from 1 to {MAX_COUNT:,} (0 for 1), got {rule.clear_count}"))
    if rule.HasField("duration"):
        us = rule.duration.seconds * 1_000_000 + rule.duration.nanos / 1000
        if not 0 <= us <= MAX_DURATION_US or us != int(us):
            given = rule.duration.ToJsonString()
            add(("duration", f"must be whole microseconds from 0s to 7 days (604800s), got {given}"))
    return found
