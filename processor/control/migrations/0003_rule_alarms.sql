-- adopts: legacy 7
-- Alarms (processor/stream/alarms.py): rules made at run time raise them, clear them after clear_count
-- readings in a row that no longer meet their condition (0: a rule of the original configuration,
-- which raises events only).
ALTER TABLE rules ADD COLUMN clear_count integer NOT NULL DEFAULT 0;
