-- The registry reads when each device was last heard (Device.last_seen_time, registry/store.py):
-- the latest reading of its sensors.
GRANT SELECT ON latest_readings TO metrics_registry;
