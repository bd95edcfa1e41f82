-- adopts: legacy 4
-- Which rule raised an event, and how urgent it is (0: unspecified, the original configuration's).
ALTER TABLE events
    ADD COLUMN rule_id  text     NOT NULL DEFAULT '',
    ADD COLUMN severity smallint NOT NULL DEFAULT 0;
