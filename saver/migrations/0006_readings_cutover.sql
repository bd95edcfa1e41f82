-- adopts: legacy 8
-- Readings move to a table partitioned by day (0008). The rows stored so far stay where they are and
-- become its first partition, readings_legacy, covering every time before `partitioned_from`. Attaching
-- a table as a partition needs proof that its rows fit: a CHECK constraint, added here NOT VALID (a
-- moment's lock), validated by 0007 without blocking writes, so that 0008 only swaps names.
-- partitioned_from is the start of the day after tomorrow (UTC): the savers still writing this table
-- meanwhile store nothing that late (the receiver accepts readings at most minutes ahead).
SET LOCAL lock_timeout = '2s';  -- behind a long transaction: fail and be retried, not queue every insert

CREATE TABLE readings_partitioning (
    partitioned_from timestamptz NOT NULL,
    only_row         boolean     PRIMARY KEY DEFAULT true CHECK (only_row)
);
INSERT INTO readings_partitioning (partitioned_from)
VALUES (date_trunc('day', now(), 'UTC') + interval '2 days');

DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE readings ADD CONSTRAINT readings_before_partitions CHECK (reading_time < %L) NOT VALID',
        (SELECT partitioned_from FROM readings_partitioning)
    );
END
$$;
