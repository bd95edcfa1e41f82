-- adopts: legacy 6
-- A rule's condition may have to hold for a while (Rule.duration), by reading time: microseconds, 0 = none.
ALTER TABLE rules ADD COLUMN duration_us bigint NOT NULL DEFAULT 0;
