-- adopts: legacy 10
-- Readings partitioned by reading_time: one partition a day (readings_pYYYYMMDD, made ahead and
-- dropped past their retention by the saver, saver/history.py), readings_legacy for everything
-- before readings_partitioning.partitioned_from (the table as it was: no row moves), and a
-- DEFAULT partition for readings no other partition covers (a clock years off), so that every
-- reading has a place. Only names change here: the lock that blocks inserts is held for milliseconds.
SET LOCAL lock_timeout = '2s';

ALTER TABLE readings RENAME TO readings_legacy;
ALTER INDEX readings_pkey RENAME TO readings_legacy_pkey;

CREATE TABLE readings (
    sensor_id    text             NOT NULL,
    metric_type  text             NOT NULL,
    reading_time timestamptz      NOT NULL,
    value        double precision NOT NULL,
    unit         text,
    labels       jsonb,
    PRIMARY KEY (sensor_id, metric_type, reading_time)
) PARTITION BY RANGE (reading_time);

-- The validated constraint (0007) spares the scan; the primary key's index is adopted, not built.
DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE readings ATTACH PARTITION readings_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
        (SELECT partitioned_from FROM readings_partitioning)
    );
END
$$;

CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- How far back each kind of history is complete: rows before kept_from may have been deleted by
-- retention. metric_type '' stands for every type without a row of its own. The assessor reads it to
-- say which part of a range raw readings still cover.
CREATE TABLE history_horizons (
    kind        text        NOT NULL CHECK (kind IN ('readings', 'rollups', 'events')),
    metric_type text        NOT NULL DEFAULT '',
    kept_from   timestamptz NOT NULL,
    PRIMARY KEY (kind, metric_type)
);
