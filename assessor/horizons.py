"""How far back raw readings go: the saver's retention deletes older ones (saver/history.py keeps
`history_horizons`); rollups keep covering the whole history."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

# A metric type's own horizon, or that of every type without one (metric_type '').
RAW_FROM = """
SELECT max(kept_from) FROM (
    SELECT DISTINCT ON (t) kept_from
    FROM unnest($1::text[]) AS t
    JOIN history_horizons h ON h.kind = 'readings' AND h.metric_type IN (t, '')
    ORDER BY t, h.metric_type DESC
) AS horizons
"""


async def raw_from(
    conn: asyncpg.Pool | asyncpg.Connection, metric_types: Sequence[str], start_us: int
) -> int | None:
    """The time (µs) before which raw readings of any of the types may have expired, if the range
    starting at `start_us` reaches before it; None when the range's raw readings are all kept."""
    kept_from: int | None = await conn.fetchval(RAW_FROM, list(metric_types))
    return kept_from if kept_from is not None and kept_from > start_us else None
