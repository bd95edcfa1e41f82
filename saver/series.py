"""The ids of series and of reading attributes (saver/migrations/0010), made when first seen and
remembered by the process: a row of readings_raw carries these ids instead of the names.

Ids are made in statements of their own, committed before the rows that use them are written (a
rolled-back write leaves no id remembered that the table does not have), and never deleted, so a
remembered id stays right for as long as the connection that learned it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import asyncpg

from runtime import postgres

SeriesKey = tuple[str, str]  # sensor id, metric type
AttributesKey = tuple[str | None, str | None]  # unit, labels as canonical JSON (sorted keys)

# Rows inserted concurrently by another saver are in neither half of the answer (the insert skips
# them, the select's snapshot predates them): what is still missing is asked again.
SERIES = """
WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[]) AS w (sensor_id, metric_type)),
made AS (
    INSERT INTO series (sensor_id, metric_type) SELECT * FROM wanted
    ON CONFLICT DO NOTHING RETURNING series_id, sensor_id, metric_type
)
SELECT * FROM made
UNION ALL
SELECT s.series_id, s.sensor_id, s.metric_type FROM series s JOIN wanted USING (sensor_id, metric_type)
"""
ATTRIBUTES = """
WITH wanted AS (SELECT * FROM unnest($1::text[], $2::jsonb[]) AS w (unit, labels)),
made AS (
    INSERT INTO reading_attributes (unit, labels) SELECT * FROM wanted
    ON CONFLICT (unit, labels_digest(labels)) DO NOTHING
    RETURNING attributes_id, unit, labels
)
SELECT attributes_id, unit, labels::text AS labels FROM made
UNION ALL
SELECT a.attributes_id, a.unit, a.labels::text FROM reading_attributes a JOIN wanted w
    ON a.unit IS NOT DISTINCT FROM w.unit AND a.labels IS NOT DISTINCT FROM w.labels
"""
ATTEMPTS = 5


class Ids:
    """Remembered ids: series by (sensor id, metric type), attributes by (unit, labels JSON)."""

    def __init__(self) -> None:
        self.series: dict[SeriesKey, int] = {}
        self.attributes: dict[AttributesKey, int] = {}

    async def learn(
        self, conn: asyncpg.Connection, series: Iterable[SeriesKey], attributes: Iterable[AttributesKey]
    ) -> None:
        """Makes sure every key given has its id remembered; `conn` must not be in a transaction."""
        if conn.is_in_transaction():
            raise RuntimeError("ids are made outside the write's transaction")
        await self._learn(conn, SERIES, self.series, {k for k in series if k not in self.series})
        await self._learn(
            conn, ATTRIBUTES, self.attributes, {k for k in attributes if k not in self.attributes}
        )

    @staticmethod
    async def _learn(
        conn: asyncpg.Connection, statement: str, known: dict[Any, int], missing: set[Any]
    ) -> None:
        for _ in range(ATTEMPTS):
            if not missing:
                return
            first, second = zip(*missing, strict=True)
            for row in await conn.fetch(statement, list(first), list(second)):
                key = (row[1], _canonical(row[2]) if statement is ATTRIBUTES else row[2])
                known[key] = row[0]
                missing.discard(key)
        if missing:
            example = next(iter(missing))
            raise RuntimeError(f"no id for {len(missing)} keys after {ATTEMPTS} attempts, e.g. {example}")


def _canonical(labels: str | None) -> str | None:
    """jsonb's text of labels in the form of runtime.validation.labels_key (jsonb orders keys its own way)."""
    return None if labels is None else json.dumps(json.loads(labels), sort_keys=True, separators=(",", ":"))


# The ids a connection has learned (a saver's writers each learn them once).
IDS: postgres.PerConnection[Ids] = postgres.PerConnection(Ids)
