"""How long history is kept, from the saver's settings, and the cutoffs that follows from it.

A retention is a whole number of days, 0 for "keep forever". With N days, what is older than the
start of today (UTC) minus N days has expired: cutoffs fall on day boundaries, which are the
boundaries of the readings' partitions, so whole partitions expire at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from runtime.settings import SettingsError
from runtime.validation import METRIC_TYPE


def setting_name(field: str) -> str:
    """The environment variable of one of the saver's settings, as errors name it."""
    return f"METRICS_SAVER_{field.upper()}"


@dataclass(frozen=True)
class Retention:
    """Days to keep: raw readings (per metric type, else the default), rollups, events; 0 = forever."""

    readings_days: int
    readings_days_by_type: Mapping[str, int]
    rollups_days: int
    events_days: int

    def readings_cutoff(self, metric_type: str, today: datetime) -> datetime | None:
        """Readings of `metric_type` before this time have expired; None: they never do."""
        return cutoff(self.readings_days_by_type.get(metric_type, self.readings_days), today)

    def longest_readings_cutoff(self, today: datetime) -> datetime | None:
        """Before this time every metric type's readings have expired (None: some never do)."""
        days = [self.readings_days, *self.readings_days_by_type.values()]
        return None if 0 in days else cutoff(max(days), today)


def cutoff(days: int, today: datetime) -> datetime | None:
    """The start of the day `days` before `today`'s (UTC); None for 0 (forever)."""
    if days == 0:
        return None
    return today.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def retention(
    readings_days: int, readings_days_by_type: Iterable[str], rollups_days: int, events_days: int
) -> Retention:
    """The retention the settings describe; SettingsError names the setting that is wrong."""
    for field, days in (
        ("readings_retention_days", readings_days),
        ("rollups_retention_days", rollups_days),
        ("events_retention_days", events_days),
    ):
        if days < 0:
            raise SettingsError(f"{setting_name(field)}: {days} days; a retention is 0 (forever) or more")
    by_type = parse_days_by_type(readings_days_by_type)
    longest = [readings_days, *by_type.values()]
    if rollups_days and (0 in longest or max(longest) > rollups_days):
        kept = "forever" if 0 in longest else f"{max(longest)} days"
        raise SettingsError(
            f"{setting_name('rollups_retention_days')}: {rollups_days} days, but raw readings are kept "
            f"{kept}; rollups answer the statistics once raw readings are gone, so they must be kept "
            "at least as long (0: forever)"
        )
    return Retention(readings_days, by_type, rollups_days, events_days)


def parse_days_by_type(specs: Iterable[str]) -> dict[str, int]:
    """{"vibration": 7} from "type:days" strings, e.g. ("vibration:7", "energy:730")."""
    name = setting_name("readings_retention_by_type")
    by_type: dict[str, int] = {}
    for spec in specs:
        metric_type, _, days = spec.strip().partition(":")
        if METRIC_TYPE.fullmatch(metric_type) is None or not days.isdigit():
            raise SettingsError(f"{name}: {spec!r} is not type:days, e.g. vibration:7 (0 days: forever)")
        if metric_type in by_type:
            raise SettingsError(f"{name}: {metric_type!r} is given twice")
        by_type[metric_type] = int(days)
    return by_type
