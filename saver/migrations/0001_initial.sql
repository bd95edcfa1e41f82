-- adopts: legacy 1
-- Readings, events, per-minute rollups and each sensor's latest reading per metric type.
-- Times are stored with microsecond resolution (PostgreSQL's), in UTC.

-- Every reading once: a reading is identified by its sensor, metric type and time.
CREATE TABLE readings (
    sensor_id    text             NOT NULL,
    metric_type  text             NOT NULL,
    reading_time timestamptz      NOT NULL,
    value        double precision NOT NULL,
    unit         text,
    labels       jsonb,
    PRIMARY KEY (sensor_id, metric_type, reading_time)
);

-- Events as the processor raised them; event_id is deterministic, so a redelivered event is stored once.
CREATE TABLE events (
    event_id     uuid             PRIMARY KEY,
    kind         smallint         NOT NULL,
    sensor_id    text             NOT NULL,
    metric_type  text             NOT NULL,
    value        double precision NOT NULL,
    reading_time timestamptz      NOT NULL,
    threshold    double precision NOT NULL,
    count        integer          NOT NULL,
    detect_time  timestamptz      NOT NULL
);
-- ListEvents: newest first, filtered by sensor (and kind), or over all sensors; ties by event_id.
CREATE INDEX events_by_sensor_time ON events (sensor_id, reading_time DESC, event_id DESC);
CREATE INDEX events_by_time ON events (reading_time DESC, event_id DESC);

-- Aggregates of the readings of one sensor and type in one minute, updated in the transaction that
-- stores the readings (counting only rows that were new), so statistics never scan raw history.
CREATE TABLE rollups_minute (
    sensor_id    text             NOT NULL,
    metric_type  text             NOT NULL,
    minute       timestamptz      NOT NULL,
    count        bigint           NOT NULL,
    sum          double precision NOT NULL,
    sum_squares  double precision NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    PRIMARY KEY (sensor_id, metric_type, minute)
);

-- The latest reading of each sensor and type (ListSensors).
CREATE TABLE latest_readings (
    sensor_id    text             NOT NULL,
    metric_type  text             NOT NULL,
    reading_time timestamptz      NOT NULL,
    value        double precision NOT NULL,
    unit         text,
    PRIMARY KEY (sensor_id, metric_type)
);
