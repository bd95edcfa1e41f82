-- Closed hours packed (saver/compaction.py): a series' readings of an hour, once the hour is closed,
-- become one row of readings_packed, their times, values and attributes compressed together
-- (runtime/packed.py), and leave readings_raw in the same transaction. Partitioned by day like
-- readings_raw: a day's partitions of both are made and dropped together (saver/partitions.py).
SET LOCAL lock_timeout = '2s';

CREATE TABLE readings_packed (
    series_id  integer     NOT NULL,
    hour       timestamptz NOT NULL,  -- the start of the hour of its readings
    first_time timestamptz NOT NULL,
    last_time  timestamptz NOT NULL,
    count      integer     NOT NULL,
    readings   bytea       NOT NULL,
    PRIMARY KEY (series_id, hour)
) PARTITION BY RANGE (hour);
-- Packed bytes do not compress further: kept out of line without trying.
ALTER TABLE readings_packed ALTER COLUMN readings SET STORAGE EXTERNAL;
CREATE TABLE readings_packed_default PARTITION OF readings_packed DEFAULT;

DO $$
DECLARE
    day record;
BEGIN
    FOR day IN
        SELECT substr(c.relname, length('readings_raw_p') + 1) AS name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings_raw'::regclass AND c.relname ~ '^readings_raw_p\d{8}$'
    LOOP
        EXECUTE format(
            'CREATE TABLE readings_packed_p%s PARTITION OF readings_packed FOR VALUES FROM (%L) TO (%L)',
            day.name, day.name::date::timestamp AT TIME ZONE 'UTC',
            (day.name::date + 1)::timestamp AT TIME ZONE 'UTC'
        );
    END LOOP;
END
$$;

-- Compaction finds an hour's raw readings by time: a block range index, a few pages for a day.
CREATE INDEX readings_raw_time ON readings_raw USING brin (reading_time);

-- closed_before: hours before it may have packed rows, so a reading stored into one of them is
-- checked against them first (saver/store.py). Every write of the saver reads it FOR SHARE, so the
-- compaction's UPDATE that moves it forward waits for the writes that saw the old value.
-- compacted_before: every raw reading before it is packed, but those in compaction_queue.
CREATE TABLE compaction_state (
    closed_before    timestamptz NOT NULL,
    compacted_before timestamptz NOT NULL,
    only_row         boolean     PRIMARY KEY DEFAULT true CHECK (only_row)
);
INSERT INTO compaction_state (closed_before, compacted_before) VALUES ('2000-01-01Z', '2000-01-01Z');

-- The (series, hour) that readings were stored into after the hour was closed: compacted again
-- once queued_at is as old as the compaction's grace.
CREATE TABLE compaction_queue (
    series_id integer     NOT NULL,
    hour      timestamptz NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, hour)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON readings_packed TO metrics_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON compaction_queue TO metrics_writer;
GRANT SELECT, UPDATE ON compaction_state TO metrics_writer;
GRANT SELECT ON readings_packed, compaction_state TO metrics_reader;
