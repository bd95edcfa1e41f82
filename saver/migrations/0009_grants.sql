-- Who may use the saver's tables, now that each service owns its tables (runtime/migrations.py):
--   metrics_writer     the saver's data path: reads and writes the readings, events, alarms and their
--                      aggregates (the history's upkeep, saver/history.py, runs as the owner, metrics)
--   metrics_reader     the assessor: reads them, and how far back history is kept
--   metrics_processor  the processor's AlarmsService: reads the alarms
-- The schema's default privileges gave the writer and the reader every table the owner made, other
-- services' too; from now on they give nothing, and each owner's migrations grant what they mean to.
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM metrics_writer, metrics_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM metrics_writer;
REVOKE ALL ON history_horizons, readings_partitioning FROM metrics_writer;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON readings, events, alarms, rollups_minute, rollups_hour, histogram_hour, latest_readings
    TO metrics_writer;
GRANT SELECT
    ON readings, events, alarms, rollups_minute, rollups_hour, histogram_hour, latest_readings,
       history_horizons
    TO metrics_reader;
GRANT SELECT ON alarms TO metrics_processor;
