"""The backup tool's arguments (stack/backup.py): a restore's time must say its zone."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from stack import backup


def test_a_time_to_restore_to_must_say_its_zone() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="has no time zone"):
        backup._time("2026-12-04 17:00:00")
    with pytest.raises(argparse.ArgumentTypeError, match="is not a time"):
        backup._time("last tuesday")
    assert backup._time("2026-12-04 17:00:00+00") == datetime(2026, 12, 4, 17, tzinfo=UTC)
