"""InfluxDB line protocol read into lines and readings (runtime/line_protocol.py), on the examples of
InfluxDB's documentation and what Telegraf writes."""

from __future__ import annotations

import pytest

from runtime.line_protocol import Line, LineError, Readings, lines, parse, readings, to_micros


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu,host=a usage_idle=3 1700000000000000000",
         Line("cpu", {"host": "a"}, {"usage_idle": 3.0}, 1700000000000000000)),
        ("weather,location=us-midwest temperature=82,humid=71i,ok=t,bad=FALSE",
         Line("weather", {"location": "us-midwest"}, {"temperature": 82.0, "humid": 71, "ok": True, "bad": False}, None)),
        ("m value=-1.5e3,u=7u", Line("m", {}, {"value": -1500.0, "u": 7}, None)),
        (r"my\ measurement,tag\ key=tag\,value,k\=x=y field\ key=1.5", Line(
            "my measurement", {"tag key": "tag,value", "k=x": "y"}, {"field key": 1.5}, None)),
        ('m,sensor=s1 note="a \\"quoted\\" word, with = and spaces",value=2 17',
         Line("m", {"sensor": "s1"}, {"note": 'a "quoted" word, with = and spaces', "value": 2.0}, 17)),
        (r'm path="C:\\dir\\file"', Line("m", {}, {"path": "C:\\dir\\file"}, None)),
    ],
)  # fmt: skip
def test_lines_are_read(text: str, expected: Line) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("m", "expected a measurement"),
        ("m value=1 2 3", "expected a measurement"),
        ("m,host value=1", "tag 'host' is not key=value"),
        ("m value", "field 'value' is not key=value"),
        ("m value=hot", "field 'value': 'hot' is not a number"),
        ("m value=NaN", "is not a finite number"),
        ("m value=1 soon", "timestamp 'soon' is not an integer"),
        ('m note="open', "a string field is not closed"),
        (",host=a value=1", "the measurement is empty"),
    ],
)
def test_a_bad_line_says_why(text: str, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse(text)


def test_blank_lines_and_comments_are_skipped_and_lines_numbered() -> None:
    found = list(lines("# written by hand\n\nm,sensor=a value=1\r\nbad\n  \nm,sensor=b value=2\n"))
    assert found == [(3, "m,sensor=a value=1"), (4, "bad"), (6, "m,sensor=b value=2")]


def test_a_line_s_fields_are_readings_of_its_sensor() -> None:
    line = parse("cpu,host=gw-1,site=plant-7 value=0.5,usage_idle=97i,up=t 1700000000123456789")
    assert readings(line, ("sensor", "host"), "ns") == Readings(
        "gw-1",
        {"site": "plant-7"},
        [("cpu", 0.5), ("cpu_usage_idle", 97.0), ("cpu_up", 1.0)],
        1700000000123456,
    )
    # The first sensor tag the line has; other tags are labels, the host too then.
    both = readings(parse("m,host=h,sensor=s value=1"), ("sensor", "host"), "ns")
    assert (both.sensor_id, both.labels) == ("s", {"host": "h"})
    # No timestamp: no time (the receiver stamps the arrival).
    assert readings(parse("m,sensor=s value=1"), ("sensor",), "s").time_us is None


def test_a_line_without_a_sensor_or_with_a_string_is_no_readings() -> None:
    with pytest.raises(LineError, match="no sensor: the line has none of the tags sensor, host"):
        readings(parse("m,site=a value=1"), ("sensor", "host"), "ns")
    with pytest.raises(LineError, match="field 'note' is a string"):
        readings(parse('m,sensor=s value=1,note="x"'), ("sensor",), "ns")


@pytest.mark.parametrize(
    ("precision", "micros"), [("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)]
)
def test_precisions(precision: str, micros: int) -> None:
    assert to_micros(1_000, precision) == micros
