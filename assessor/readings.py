"""A series' readings in a time range, wherever they are: raw rows (readings_raw, through the
function series_readings) and packed hours (readings_packed, unpacked here: runtime/packed.py).

One statement reads both, so one snapshot: compaction moves a reading from raw to packed in one
transaction, and a statement sees it in exactly one of the two. With a limit, only as many packed
rows are read as can hold that many readings (each row says how many it has).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import numpy as np

from runtime import packed, postgres

# Oldest first. $5: at most this many (NULL: all). Packed rows are taken in time order while the
# readings before them, less those of the first row (which may begin before the range), are fewer
# than the limit.
OLDEST_FIRST = """
(SELECT reading_time, value, unit, labels, NULL::bytea AS packed
 FROM series_readings($1, $2) WHERE reading_time >= $3 AND reading_time < $4
 ORDER BY reading_time LIMIT $5)
UNION ALL
(SELECT NULL, NULL, NULL, NULL, readings FROM (
    SELECT readings, sum(count) OVER w - count AS before, first_value(count) OVER w AS first
    FROM readings_packed
    WHERE series_id = (SELECT series_id FROM series WHERE sensor_id = $1 AND metric_type = $2)
      AND hour > $3 - interval '1 hour' AND hour < $4 AND last_time >= $3 AND first_time < $4
    WINDOW w AS (ORDER BY hour)
 ) p WHERE $5::bigint IS NULL OR before < $5 + first)
"""
NEWEST_FIRST = OLDEST_FIRST.replace(
    "ORDER BY reading_time LIMIT", "ORDER BY reading_time DESC LIMIT"
).replace("WINDOW w AS (ORDER BY hour)", "WINDOW w AS (ORDER BY hour DESC)")
ATTRIBUTES = "SELECT attributes_id, unit, labels FROM reading_attributes WHERE attributes_id = ANY($1::int[])"


@dataclass(frozen=True)
class Window:
    """Readings in time order (newest first if asked so): times (µs), values, and for each, its
    unit and labels (JSON text) or, for a packed reading, its attributes' id to look up."""

    times: np.ndarray
    values: np.ndarray
    units: list[str | None]
    labels: list[str | None]

    def __len__(self) -> int:
        return len(self.times)


# Attributes never change once made (saver/series.py): remembered per pool (or connection).
_ATTRIBUTES: postgres.PerConnection[dict[int, tuple[str | None, str | None]]] = postgres.PerConnection(dict)


async def window(
    conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str, metric_type: str, start_us: int, end_us: int,
    limit: int | None = None, *, newest_first: bool = False,
) -> Window:  # fmt: skip
    """The readings in [start_us, end_us), the first `limit` of them (all if None)."""
    if start_us >= end_us:
        return _empty()
    rows = await conn.fetch(
        NEWEST_FIRST if newest_first else OLDEST_FIRST, sensor_id, metric_type, start_us, end_us, limit
    )
    raw = [r for r in rows if r["packed"] is None]
    unpacked = [packed.unpack(r["packed"]) for r in rows if r["packed"] is not None]
    if not unpacked:  # all raw: already in order and within the limit
        return Window(
            np.fromiter((r["reading_time"] for r in raw), np.int64, len(raw)),
            np.fromiter((r["value"] for r in raw), np.float64, len(raw)),
            [r["unit"] for r in raw], [r["labels"] for r in raw],
        )  # fmt: skip
    times = np.concatenate([np.fromiter((r["reading_time"] for r in raw), np.int64, len(raw))]
                           + [p.times for p in unpacked])  # fmt: skip
    values = np.concatenate([np.fromiter((r["value"] for r in raw), np.float64, len(raw))]
                            + [p.values for p in unpacked])  # fmt: skip
    # Raw readings point at themselves (-1 - index), packed ones at their attributes' id.
    keys = np.concatenate([-1 - np.arange(len(raw), dtype=np.int64)] + [p.attributes for p in unpacked])
    inside = (times >= start_us) & (times < end_us)
    times, values, keys = times[inside], values[inside], keys[inside]
    order = np.argsort(times, kind="stable")
    if newest_first:
        order = order[::-1]
    order = order[:limit]
    times, values, keys = times[order], values[order], keys[order]
    attributes = await _learn(conn, {int(k) for k in keys.tolist() if k >= 0})
    units, labels = [], []
    for key in keys.tolist():
        unit, label = (raw[-1 - key]["unit"], raw[-1 - key]["labels"]) if key < 0 else attributes[key]
        units.append(unit)
        labels.append(label)
    return Window(times, values, units, labels)


async def _learn(
    conn: asyncpg.Connection | asyncpg.Pool, ids: set[int]
) -> dict[int, tuple[str | None, str | None]]:
    known = _ATTRIBUTES.of(conn)
    missing = [i for i in ids if i not in known]
    if missing:
        for row in await conn.fetch(ATTRIBUTES, missing):
            known[row["attributes_id"]] = (row["unit"], row["labels"])
    return known


def _empty() -> Window:
    return Window(np.empty(0, np.int64), np.empty(0, np.float64), [], [])
