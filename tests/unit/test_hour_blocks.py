"""The group sums over hourly blocks (assessor/hour_blocks.py) against the plain computation, on
random blocks: per bucket of several hours, the sensors with readings, the top by mean with ties by id."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from assessor.hour_blocks import Block, aggregate


def blocks_of(rows: list[dict[str, tuple[int, float, float, float]]]) -> tuple[list[Block], list[str]]:
    """Blocks of {sensor: (count, sum, min, max)} per hour, numbered as HourBlocks numbers them."""
    numbers: dict[str, int] = {}
    blocks = []
    for hour in rows:
        sensors = sorted(hour)
        ids = [numbers.setdefault(s, len(numbers)) for s in sensors]
        blocks.append(Block(
            sensors, np.array(ids, np.int64), np.array([hour[s][0] for s in sensors], np.int64),
            np.array([hour[s][1] for s in sensors]), np.array([hour[s][2] for s in sensors]),
            np.array([hour[s][3] for s in sensors]), 0.0,
        ))  # fmt: skip
    by_number = [""] * len(numbers)
    for name, number in numbers.items():
        by_number[number] = name
    return blocks, by_number


@pytest.mark.parametrize("seed", range(20))
def test_the_sums_are_the_plain_ones(seed: int) -> None:
    rng = random.Random(seed)
    sensors = [f"{p}-{n}" for p in ("a", "b", "bb", "c") for n in range(rng.randrange(1, 6))]
    hours = []
    for _ in range(rng.choice([1, 6, 24])):
        hour = {}
        for s in sensors:
            if rng.random() < 0.7:
                count = rng.randrange(1, 5)
                values = [rng.choice([1.0, 2.0, 3.5, rng.uniform(-9, 9)]) for _ in range(count)]
                hour[s] = (count, sum(values), min(values), max(values))
        hours.append(hour)
    blocks, names = blocks_of(hours)
    per_bucket, top = rng.choice([1, 2, 3]), rng.choice([1, 3, 50])
    low, high = "b", "c"  # the sensors b-* and bb-*
    totals = aggregate(blocks, names, low, high, per_bucket, top)

    inside = [{s: r for s, r in h.items() if low <= s < high} for h in hours]
    assert len(totals.buckets) == math.ceil(len(hours) / per_bucket)
    for bucket, first in zip(totals.buckets, range(0, len(hours), per_bucket), strict=True):
        rows = [(s, r) for h in inside[first : first + per_bucket] for s, r in h.items()]
        if not rows:
            assert bucket == (0, 0, 0.0, None, None)
            continue
        sensors_n, count, total, low_v, high_v = bucket
        assert sensors_n == len({s for s, _ in rows})
        assert count == sum(r[0] for _, r in rows)
        assert math.isclose(total, sum(r[1] for _, r in rows))
        assert (low_v, high_v) == (min(r[2] for _, r in rows), max(r[3] for _, r in rows))
    per_sensor: dict[str, list[tuple[int, float, float, float]]] = {}
    for h in inside:
        for s, r in h.items():
            per_sensor.setdefault(s, []).append(r)
    assert totals.sensors == len(per_sensor)
    mean = {s: sum(r[1] for r in rs) / sum(r[0] for r in rs) for s, rs in per_sensor.items()}
    expected = sorted(per_sensor, key=lambda s: (-mean[s], s))[:top]
    assert [t[0] for t in totals.top] == expected
    for name, count, m, low_v, high_v in totals.top:
        rs = per_sensor[name]
        assert count == sum(r[0] for r in rs) and math.isclose(m, mean[name])
        assert (low_v, high_v) == (min(r[2] for r in rs), max(r[3] for r in rs))


def test_ties_are_ordered_by_id() -> None:
    hour = {f"s-{n}": (1, 5.0, 5.0, 5.0) for n in (3, 1, 2, 4)}
    blocks, names = blocks_of([hour])
    assert [t[0] for t in aggregate(blocks, names, "s-", "s.", 1, 2).top] == ["s-1", "s-2"]
