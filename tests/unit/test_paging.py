"""Page sizes as Google's AIP-158 asks: 0 is the default, more than the maximum is the maximum."""

from __future__ import annotations

import pytest

from runtime.errors import InvalidArgument
from runtime.paging import page_size


def test_zero_is_the_default_and_too_large_is_the_maximum() -> None:
    assert page_size(0, 100, 1_000) == 100
    assert page_size(7, 100, 1_000) == 7
    assert page_size(1_000, 100, 1_000) == 1_000
    assert page_size(1_001, 100, 1_000) == 1_000
    assert page_size(2**31 - 1, 100, 1_000) == 1_000


def test_a_negative_size_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument, match="page_size: must not be negative"):
        page_size(-1, 100, 1_000)
