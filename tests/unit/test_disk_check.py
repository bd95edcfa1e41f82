"""`make run` refuses to start on a nearly full disk, saying how much is free and how much the stack holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stack.settings import StackSettings
from stack.system import SetupError, check_disk, used_mb


def test_a_disk_with_room_passes(tmp_path: Path) -> None:
    check_disk(dataclasses.replace(StackSettings(), state_dir=tmp_path / "state", min_free_mb=1))
    assert (tmp_path / "state").is_dir()


def test_too_little_room_is_refused_with_the_numbers(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"x" * (3 << 20))
    settings = dataclasses.replace(StackSettings(), state_dir=tmp_path, min_free_mb=1 << 40)
    with pytest.raises(
        SetupError, match=rf"MB free on the disk holding {tmp_path} \(the stack's data takes 3 MB"
    ) as error:
        check_disk(settings)
    assert "1,099,511,627,776 MB are needed" in str(error.value)
    assert "METRICS_MIN_FREE_MB" in str(error.value)


def test_used_counts_the_files_below(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"x" * (5 << 20))
    assert used_mb(tmp_path) == 5
