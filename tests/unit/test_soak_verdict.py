"""The soak's verdict (bench/soak.py): a part grew when its floor at the end of the load is above
its ceiling after the warm-up; a spike of periodic work is not growth, nor lost readings hidden."""

from __future__ import annotations

from bench.soak import Counts, Sample, report, windows


def sample(
    at_s: float, saver_mb: float, lag: int, postgres_files: int = 900, connections: int = 30
) -> Sample:
    return Sample(
        at_s, {"saver": saver_mb, "postgres": 120.0}, {"postgres": 130.0}, {"saver": 26, "postgres": postgres_files},
        connections, {"saver/readings": lag}, live_rows=1_000, dead_rows=10, database_mb=100.0,
    )  # fmt: skip


def run(saver_mb: list[float], lags: list[int], acked: int = 10, stored: int = 10) -> dict:
    """A soak of len(saver_mb) samples a minute apart, the first 6 minutes its warm-up."""
    samples = [sample(60.0 * i, mb, lag) for i, (mb, lag) in enumerate(zip(saver_mb, lags, strict=True))]
    counts = Counts(batches_acked=acked, samples=samples)
    early, late = windows(samples, 360)
    return report(counts, early, late, sample(samples[-1].at_s + 60, saver_mb[-1], 0), stored, 3600, 1_000)


def test_windows_are_the_first_and_last_ten_minutes_under_load_after_the_warm_up() -> None:
    samples = [sample(60.0 * i, 100, 0) for i in range(61)]
    early, late = windows(samples, 360)
    assert [x.at_s for x in early] == [60.0 * i for i in range(6, 17)]
    assert [x.at_s for x in late] == [60.0 * i for i in range(50, 61)]
    # A short run: thirds of what follows the warm-up.
    early, late = windows(samples[:13], 360)
    assert [x.at_s for x in early] == [360.0, 420.0, 480.0]
    assert [x.at_s for x in late] == [600.0, 660.0, 720.0]


def test_a_spike_of_periodic_work_at_the_end_is_not_growth() -> None:
    memory = [100.0] * 55 + [900.0, 1_374.0, 110.0, 105.0, 104.0, 1_200.0]
    lags = [2_000] * 55 + [11_000, 9_000, 500, 2_100, 1_800, 11_555]
    result = run(memory, lags)
    assert result["verdict"] == "pass", result["problems"]
    assert result["late"]["memory_mb"]["saver"] == (100.0, 1_374.0)


def test_a_floor_that_rises_is_growth_and_a_growing_backlog_is_falling_behind() -> None:
    memory = [100.0 + i * 3 for i in range(61)]
    lags = [2_000 + i * 200 for i in range(61)]
    result = run(memory, lags)
    assert result["verdict"] == "fail"
    assert result["problems"] == [
        "saver memory 148 → 250 MB",
        "fell behind: lag 5,200 → 12,000 records under load",
    ]


def test_a_reading_lost_fails_whatever_else() -> None:
    result = run([100.0] * 61, [0] * 61, acked=10, stored=9)
    assert result["problems"] == ["10 readings acknowledged, 9 stored"]


def test_postgres_is_held_to_its_connections_not_to_its_cache_of_data_files() -> None:
    samples = [sample(60.0 * i, 100, 0, postgres_files=800 + 10 * i, connections=30) for i in range(61)]
    early, late = windows(samples, 360)
    end = samples[-1]
    assert report(Counts(samples=samples), early, late, end, 0, 3600, 1_000)["verdict"] == "pass"
    samples = [sample(60.0 * i, 100, 0, connections=30 + i) for i in range(61)]
    early, late = windows(samples, 360)
    assert report(Counts(samples=samples), early, late, end, 0, 3600, 1_000)["problems"] == [
        "postgres connections 46 → 80"
    ]
