-- Alarms: the version is taken; its tables arrive with the alarms.
SELECT;
