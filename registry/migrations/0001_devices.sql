-- The fleet's devices: the registry's table (registry/store.py), in a schema of its own that only
-- the registry's role (metrics_registry) may use.
CREATE SCHEMA registry;

CREATE TABLE registry.devices (
    device_id        text        PRIMARY KEY,
    -- Empty: only the sensor whose id is the device's.
    sensor_id_prefix text        NOT NULL DEFAULT '',
    display_name     text        NOT NULL DEFAULT '',
    labels           jsonb       NOT NULL DEFAULT '{}',
    -- metrics.v1.DeviceTier: 1 device, 2 gateway.
    tier             smallint    NOT NULL,
    -- metrics.v1.DeviceState: 1 enabled, 2 disabled.
    state            smallint    NOT NULL,
    version          bigint      NOT NULL,
    create_time      timestamptz NOT NULL,
    update_time      timestamptz NOT NULL,
    -- A deleted device's row stays (until its id is taken again), so that a start after a crash can
    -- still tell the devices topic (registry/service.py: reconcile).
    delete_time      timestamptz
);
-- ListDevices by labels: `labels @> '{"site": "plant-7"}'`.
CREATE INDEX devices_labels ON registry.devices USING gin (labels jsonb_path_ops);

GRANT USAGE ON SCHEMA registry TO metrics_registry;
GRANT SELECT, INSERT, UPDATE ON registry.devices TO metrics_registry;
