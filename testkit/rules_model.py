"""The model of the rules, in Python: what the processor's counter script (processor/stream/counters.lua)
does to counters and alarms, reading by reading, written as plainly as the rules read (processor/rules.py).
The tests hold the real pipeline against it; the processor never runs it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from processor.rules import Rule, RuleBook


def apply(
    counters: dict[tuple[str, str], int],
    rules: RuleBook | Mapping[str, Rule] | Iterable[Rule],
    readings: Iterable[tuple[str, str, float]],
) -> list[int]:
    """The reference model: applies (sensor, type, value) readings in order to `counters` (keyed by
    sensor and rule field).

    Returns the indices of the readings that raised an event (once per rule that raised one). The
    processor does the same in one Redis script per batch (processor/stream/counters.py); tests hold the
    two against each other.
    """
    book = RuleBook.of(rules)
    raised: list[int] = []
    for i, (sensor_id, metric_type, value) in enumerate(readings):
        for rule in book.matching(sensor_id, metric_type):
            key = (sensor_id, rule.field)
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
    rules: RuleBook | Mapping[str, Rule] | Iterable[Rule],
    readings: Iterable[tuple[str, str, float, int]],
    since: dict[tuple[str, str], int | None] | None = None,
    alarms: dict[tuple[str, str], list[int]] | None = None,
    cleared: list[int] | None = None,
) -> list[int]:
    """The model with reading times, (sensor, type, value, time µs): readings apply in the order
    they arrive, except one not newer than the latest applied to a rule's counter (`latest`), a
    warning or not: a repeat (Kafka's redelivery, a client's resend) or a late reading, it changes
    nothing. A rule with a duration raises at the first warning of a run that is both the count-th
    or later and at least the duration after the run's first (`since`: its time, None once raised).

    A rule with alarms (clear_count) raises only while the sensor has no active alarm of it
    (`alarms`: [consecutive clears, matches] of the active ones); a warning updates the active alarm,
    clear_count readings in a row that are not warnings clear it (their last index in `cleared`).

    Returns the indices of the readings that raised an event (once per rule that raised one).
    """
    book = RuleBook.of(rules)
    since = {} if since is None else since
    alarms = {} if alarms is None else alarms
    raised: list[int] = []
    for i, (sensor_id, metric_type, value, time) in enumerate(readings):
        for rule in book.matching(sensor_id, metric_type):
            key = (sensor_id, rule.field)
            if time <= latest.get(key, -1):
                continue
            latest[key] = time
            warning = rule.is_warning(value)
            met = _count(rule, key, warning, time, counters, since)
            if rule.clear_count:
                change = _alarm(rule, key, warning, met, alarms)
            else:
                change = "raised" if met else None
            if change == "raised":
                raised.append(i)
            elif change == "cleared" and cleared is not None:
                cleared.append(i)
    return raised


def _count(
    rule: Rule,
    key: tuple[str, str],
    warning: bool,
    time: int,
    counters: dict[tuple[str, str], int],
    since: dict[tuple[str, str], int | None],
) -> bool:
    """Counts one reading; whether it meets the rule's raising condition."""
    if not warning:
        counters[key] = 0
        since.pop(key, None)
        return False
    counters[key] = counters.get(key, 0) + 1
    if not rule.duration_us:
        return counters[key] == rule.count
    if counters[key] == 1 or key not in since:
        since[key] = time
    first = since[key]
    if first is None or counters[key] < rule.count or time - first < rule.duration_us:
        return False
    since[key] = None
    return True


def _alarm(
    rule: Rule, key: tuple[str, str], warning: bool, met: bool, alarms: dict[tuple[str, str], list[int]]
) -> str | None:
    """What one reading does to the rule's alarm for its sensor: "raised", "cleared" or None."""
    alarm = alarms.get(key)
    if alarm is None:
        if met:
            alarms[key] = [0, 1]
            return "raised"
        return None
    if warning:
        alarm[:] = [0, alarm[1] + 1]
        return None
    alarm[0] += 1
    if alarm[0] < rule.clear_count:
        return None
    del alarms[key]
    return "cleared"
