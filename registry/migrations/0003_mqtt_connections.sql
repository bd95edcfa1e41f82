-- The devices' open MQTT connections (Device.mqtt_connected), as the brokers tell of them: each
-- broker's connection log, which the registry follows (registry/presence.py).
CREATE TABLE registry.mqtt_connections (
    -- The broker's TLS listener (host:port), as the registry's settings name it.
    broker       text        NOT NULL,
    client_id    text        NOT NULL,
    -- The connection's username: a device's id (no row for a connection without one).
    device_id    text        NOT NULL,
    connect_time timestamptz NOT NULL,
    PRIMARY KEY (broker, client_id)
);
CREATE INDEX mqtt_connections_of_device ON registry.mqtt_connections (device_id);

-- When each broker last started, as its uptime tells: connections from before it are gone.
CREATE TABLE registry.mqtt_brokers (
    broker     text        PRIMARY KEY,
    start_time timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON registry.mqtt_connections, registry.mqtt_brokers TO metrics_registry;

-- When a device's oldest open MQTT connection began (null: it has none).
CREATE FUNCTION registry.mqtt_connect_time(device text) RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
    SELECT min(connect_time) FROM registry.mqtt_connections WHERE device_id = device
$$;

-- The time of the latest reading stored of a device's sensors (null: none is), from the saver's
-- latest_readings (its grant to metrics_registry): the sensor whose id is the device's when `prefix`
-- is empty, else those whose id starts with it. Each branch is a range of latest_readings' key.
-- The saver's table may not exist yet when this is made: its body is checked when it runs.
SET LOCAL check_function_bodies = off;
CREATE FUNCTION registry.last_seen(device text, prefix text) RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
    SELECT max(reading_time) FROM (
        SELECT reading_time FROM public.latest_readings WHERE prefix = '' AND sensor_id = device
        UNION ALL
        SELECT reading_time FROM public.latest_readings
        WHERE prefix <> '' AND sensor_id >= prefix
          AND sensor_id < left(prefix, -1) || chr(ascii(right(prefix, 1)) + 1)
          AND starts_with(sensor_id, prefix)
    ) AS heard
$$;
