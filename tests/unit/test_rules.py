"""The rule semantics of the original system, on the reference model the processor is held against."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrics.v1 import event_pb2, rule_pb2
from processor.control import rule_checks
from processor.rules import Rule, RuleBook, event_id, parse_rules
from runtime.validation import event_violations
from testkit.rules_model import apply, apply_as_arrived

TEMPERATURE = {"temperature": Rule("temperature", 95.0, 3)}


def test_original_scenario() -> None:
    counters: dict[tuple[str, str], int] = {}
    values = [10, 100, 97, 99, 10, 100, 107, 98]
    raised = apply(counters, TEMPERATURE, [("s", "temperature", float(v)) for v in values])
    assert [values[i] for i in raised] == [99, 98]
    assert counters == {("s", "temperature"): 3}


def test_threshold_is_inclusive_and_counting_goes_on_past_n() -> None:
    counters: dict[tuple[str, str], int] = {}
    raised = apply(counters, TEMPERATURE, [("s", "temperature", 95.0)] * 7)
    assert raised == [2]
    assert counters[("s", "temperature")] == 7


def test_sensors_and_types_count_separately() -> None:
    rules = parse_rules(["temperature:95:3", "humidity:80:2"])
    counters: dict[tuple[str, str], int] = {}
    readings = [
        ("a", "temperature", 96.0), ("b", "temperature", 96.0), ("a", "humidity", 81.0),
        ("a", "temperature", 96.0), ("a", "humidity", 90.0), ("a", "pressure", 1e9),
        ("a", "temperature", 96.0), ("b", "temperature", 1.0),
    ]  # fmt: skip
    assert apply(counters, rules, readings) == [4, 6]
    assert counters == {("a", "temperature"): 3, ("b", "temperature"): 0, ("a", "humidity"): 2}


@given(st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=60), st.integers(1, 5))
def test_events_are_exactly_the_runs_reaching_n(values: list[float], n: int) -> None:
    # An independent statement of the rule: an event for every maximal run of warnings at least n
    # long, raised by the run's n-th reading; the counter ends at the length of the final run.
    rules = {"t": Rule("t", 95.0, n)}
    counters: dict[tuple[str, str], int] = {}
    raised = apply(counters, rules, [("s", "t", v) for v in values])
    expected, run = [], 0
    for i, v in enumerate(values):
        run = run + 1 if v >= 95.0 else 0
        if run == n:
            expected.append(i)
    assert raised == expected
    assert counters.get(("s", "t"), 0) == run


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("temperature", "is not type:threshold:count"),
        ("temperature:hot:3", "is not a number"),
        ("temperature:95:0", "count at least 1"),
        ("temperature:inf:3", "must be finite"),
        ("Temperature:95:3", "is not type:threshold:count"),
    ],
)
def test_bad_rules_are_named(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rules([spec])


def test_duplicate_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="a second rule"):
        parse_rules(["temperature:95:3", "temperature:90:2"])


def test_event_id_is_deterministic_and_distinguishes_readings() -> None:
    assert event_id("s", "temperature", 1, 1) == event_id("s", "temperature", 1, 1)
    assert len({event_id("s", "temperature", 1, 1), event_id("s", "temperature", 2, 1),
                event_id("t", "temperature", 1, 1), event_id("s", "humidity", 1, 1)}) == 4  # fmt: skip
    assert len(event_id("s", "temperature", 1, 1)) == 32


def test_a_repeated_or_late_reading_changes_nothing() -> None:
    # The original scenario with a resend (99 again at 4) and late readings (100 at 3.5, 100 at 5
    # after the reset at 6): only readings newer than the latest applied one count.
    readings = [("s", "temperature", v, t) for v, t in [(10, 1), (100, 2), (97, 3), (99, 4), (100, 3), (99, 4),
                                                         (10, 6), (100, 5), (107, 7)]]  # fmt: skip
    counters: dict[tuple[str, str], int] = {}
    latest: dict[tuple[str, str], int] = {}
    assert apply_as_arrived(counters, latest, parse_rules(["temperature:95:3"]), readings) == [3]
    assert counters == {("s", "temperature"): 1}
    assert latest == {("s", "temperature"): 7}


def test_each_comparison_and_prefix_decides_a_warning() -> None:
    cases = [
        (rule_pb2.COMPARISON_GREATER_OR_EQUAL, [True, True, False]),
        (rule_pb2.COMPARISON_GREATER, [True, False, False]),
        (rule_pb2.COMPARISON_LESS_OR_EQUAL, [False, True, True]),
        (rule_pb2.COMPARISON_LESS, [False, False, True]),
    ]
    for comparison, expected in cases:
        rule = Rule("t", 5.0, 1, comparison)
        assert [rule.is_warning(v) for v in (6.0, 5.0, 4.0)] == expected, comparison
    book = RuleBook(
        [Rule("t", 5.0, 1, sensor_id_prefix="plant-7-", rule_id="r-1"), Rule("t", 9.0, 1, rule_id="r-2")]
    )
    assert [r.rule_id for r in book.matching("plant-7-a", "t")] == ["r-1", "r-2"]
    assert [r.rule_id for r in book.matching("plant-8-a", "t")] == ["r-2"]
    assert book.matching("plant-7-a", "other") == []


def test_rules_of_one_type_count_apart_and_a_configured_rule_keeps_its_counter_name() -> None:
    configured = Rule.of(rule_pb2.Rule(rule_id="t", metric_type="t", threshold=10, count=2))
    made = Rule.of(rule_pb2.Rule(rule_id="r-1", metric_type="t", threshold=20, count=1))
    assert (configured.field, made.field) == ("t", "r-1")
    counters: dict[tuple[str, str], int] = {}
    raised = apply(counters, [configured, made], [("s", "t", 15), ("s", "t", 25), ("s", "t", 5)])
    # 25 is the second warning of `configured` (count 2) and the first of `made` (count 1).
    assert raised == [1, 1]
    assert counters == {("s", "t"): 0, ("s", "r-1"): 0}


def test_a_stored_rule_becomes_the_rule_applied() -> None:
    stored = rule_pb2.Rule(
        rule_id="r-9", metric_type="t", threshold=1.5, severity=event_pb2.SEVERITY_MINOR, sensor_id_prefix="p"
    )
    rule = Rule.of(stored)
    assert (rule.count, rule.comparison, rule.severity, rule.rule_id, rule.clear_count) == (
        1, rule_pb2.COMPARISON_GREATER_OR_EQUAL, event_pb2.SEVERITY_MINOR, "r-9", 1
    )  # fmt: skip
    configured = Rule.of(rule_pb2.Rule(rule_id="t", metric_type="t", threshold=1.5, count=3, clear_count=4))
    assert configured.clear_count == 0, "the original configuration's rules raise no alarms"
    assert event_id("s", "t", 1, 1) != event_id("s", "t", 1, 1, "r-9")


def test_a_rule_with_a_duration_raises_once_a_run_has_held_it_and_has_its_count() -> None:
    rule = Rule("t", 50.0, 2, rule_id="r-1", duration_us=2_000_000)
    s = 1_000_000
    # A run held 1.5 s; a run held 2 s at its third warning; a lone warning, then its second 13 s later.
    timed = [("x", "t", v, int(t * s)) for t, v in
             [(0, 60), (1, 61), (1.5, 62), (2, 10), (3, 63), (4, 64), (5, 65), (6, 10), (7, 66), (20, 67)]]  # fmt: skip
    since: dict[tuple[str, str], int | None] = {}
    assert apply_as_arrived({}, {}, [rule], timed, since) == [6, 9]
    assert since == {("x", "r-1"): None}  # raised: the run raises nothing more
    assert rule.describe() == "t >= 50 x2 for 2 s"


def test_an_alarm_is_raised_once_updated_while_active_and_cleared_by_readings_in_a_row() -> None:
    rule = Rule("t", 50.0, 2, rule_id="r-1", clear_count=2)
    values = [60, 61, 62, 10, 63, 64, 10, 11, 65, 66]
    timed = [("x", "t", float(v), i) for i, v in enumerate(values)]
    alarms: dict[tuple[str, str], list[int]] = {}
    cleared: list[int] = []
    # Raised at 61; 63 and 64 make a second run of two, which updates the active alarm; 10, 11 clear
    # it; 65, 66 raise a new one.
    assert apply_as_arrived({}, {}, [rule], timed, alarms=alarms, cleared=cleared) == [1, 9]
    assert cleared == [7]
    assert alarms == {("x", "r-1"): [0, 1]}
    assert rule.describe() == "t >= 50 x2, alarm cleared after 2"
    # Without alarms (clear_count 0), the same readings raise once per run, as the original rules do.
    assert apply_as_arrived({}, {}, [Rule("t", 50.0, 2)], timed) == [1, 5, 9]


def test_a_silence_rule_watches_devices_by_id_prefix_and_labels_and_no_metric_type() -> None:
    stored = rule_pb2.Rule(rule_id="r-1", severity=event_pb2.SEVERITY_MAJOR, enabled=True)
    stored.silence.after.FromSeconds(900)
    stored.silence.device_id_prefix = "plant-7-"
    stored.silence.device_labels["site"] = "plant-7"
    rule = Rule.of(stored)
    assert (rule.silence_us, rule.device_labels, rule.metric_type) == (
        900_000_000,
        (("site", "plant-7"),),
        "",
    )
    assert rule.watches("plant-7-boiler", {"site": "plant-7", "kind": "boiler"})
    assert not rule.watches("plant-7-boiler", {"site": "plant-8"})
    assert not rule.watches("plant-8-boiler", {"site": "plant-7"})
    threshold = Rule("temperature", 95.0, 3, rule_id="r-2")
    book = RuleBook([rule, threshold])
    assert book.silence == (rule,)
    assert book.matching("plant-7-boiler", "") == []  # it looks at no reading's value
    assert set(book) == {rule, threshold}


def test_a_silence_rule_takes_none_of_a_threshold_rule_s_fields() -> None:
    good = rule_pb2.Rule(severity=event_pb2.SEVERITY_MINOR)
    good.silence.after.FromSeconds(10)
    assert rule_checks.violations(good) == []
    bad = rule_pb2.Rule(metric_type="temperature", threshold=3, count=2)
    bad.silence.after.FromSeconds(9)
    bad.silence.device_labels["a=b"] = "c"
    assert [v.field for v in rule_checks.violations(bad)] == [
        "rule.silence.after", "rule.silence.device_labels['a=b']", "rule.metric_type", "rule.threshold",
        "rule.count",
    ]  # fmt: skip
    bare = rule_pb2.Rule()
    bare.silence.SetInParent()
    assert [v.field for v in rule_checks.violations(bare)] == ["rule.silence.after"]


def test_a_silent_device_s_events_need_no_metric_type_but_others_do() -> None:
    raised = event_pb2.Event(
        event_id="0" * 32, kind=event_pb2.EVENT_KIND_DEVICE_SILENT, sensor_id="plant-7-boiler",
        alarm_id="0" * 32, threshold=900,
    )  # fmt: skip
    raised.reading_time.GetCurrentTime()
    raised.detect_time.GetCurrentTime()
    assert event_violations(raised) == []
    cleared = event_pb2.Event()
    cleared.CopyFrom(raised)
    cleared.kind = event_pb2.EVENT_KIND_ALARM_CLEARED
    assert event_violations(cleared) == []
    exceeded = event_pb2.Event()
    exceeded.CopyFrom(raised)
    exceeded.kind = event_pb2.EVENT_KIND_THRESHOLD_EXCEEDED
    assert [v.field for v in event_violations(exceeded)] == ["event.metric_type"]
