"""The index range for "sensor ids starting with a prefix" holds exactly those ids (code-point order)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.postgres import prefix_upper_bound

IDS = st.text(alphabet="-.0123456789:ABCZ_az", max_size=8)


@given(prefix=IDS.filter(bool), other=IDS)
def test_the_range_holds_exactly_the_ids_with_the_prefix(prefix: str, other: str) -> None:
    bound = prefix_upper_bound(prefix)
    assert prefix <= prefix + other < bound
    assert (prefix <= other < bound) == other.startswith(prefix)
