"""Pure parts of the history's upkeep: partition names and bounds, retention settings and cutoffs."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from runtime.settings import SettingsError
from saver.partitions import day_bounds, days_to_make, partition_day, partition_name
from saver.retention import cutoff, retention

NOW = datetime(2026, 11, 30, 17, 45, tzinfo=UTC)


def test_a_partition_is_named_by_its_day_and_holds_that_utc_day() -> None:
    assert partition_name(date(2026, 3, 9)) == "readings_raw_p20260309"
    assert partition_day("readings_raw_p20260309") == date(2026, 3, 9)
    assert partition_day("readings_p20260309") is None
    assert partition_day("readings_raw_default") is None
    assert day_bounds(date(2026, 12, 31)) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_only_the_missing_days_are_made() -> None:
    made = {date(2026, 12, 2)}
    assert days_to_make(date(2026, 12, 1), date(2026, 12, 3), made) == [date(2026, 12, 1), date(2026, 12, 3)]
    assert days_to_make(date(2026, 12, 3), date(2026, 12, 1), made) == []


def test_cutoffs_fall_on_day_boundaries_and_zero_keeps_forever() -> None:
    assert cutoff(30, NOW) == datetime(2026, 10, 31, tzinfo=UTC)
    assert cutoff(0, NOW) is None
    kept = retention(90, ("vibration:7", " energy:730"), 730, 365)
    assert kept.readings_cutoff("vibration", NOW) == datetime(2026, 11, 23, tzinfo=UTC)
    assert kept.readings_cutoff("temperature", NOW) == datetime(2026, 9, 1, tzinfo=UTC)
    assert kept.longest_readings_cutoff(NOW) == datetime(2024, 11, 30, tzinfo=UTC)
    assert retention(90, ("energy:0",), 0, 0).longest_readings_cutoff(NOW) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (90, ("vibration",), 1095, 1095),
            "METRICS_SAVER_READINGS_RETENTION_BY_TYPE: 'vibration' is not type:days",
        ),
        ((90, ("vibration:-1",), 1095, 1095), "METRICS_SAVER_READINGS_RETENTION_BY_TYPE: 'vibration:-1'"),
        ((90, ("Vibration:7",), 1095, 1095), "'Vibration:7' is not type:days"),
        ((90, ("a:7", "a:8"), 1095, 1095), "METRICS_SAVER_READINGS_RETENTION_BY_TYPE: 'a' is given twice"),
        ((-1, (), 1095, 1095), "METRICS_SAVER_READINGS_RETENTION_DAYS: -1 days"),
        ((90, (), 1095, -5), "METRICS_SAVER_EVENTS_RETENTION_DAYS: -5 days"),
        (
            (90, ("energy:730",), 365, 1095),
            "METRICS_SAVER_ROLLUPS_RETENTION_DAYS: 365 days, but raw readings are kept 730 days",
        ),
        (
            (0, (), 365, 1095),
            "METRICS_SAVER_ROLLUPS_RETENTION_DAYS: 365 days, but raw readings are kept forever",
        ),
    ],
)
def test_a_wrong_retention_setting_is_named(args: tuple, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        retention(*args)
