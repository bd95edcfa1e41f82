-- adopts: legacy 9
-- Reads every stored reading under a lock that lets inserts and updates go on (SHARE UPDATE EXCLUSIVE).
ALTER TABLE readings VALIDATE CONSTRAINT readings_before_partitions;
