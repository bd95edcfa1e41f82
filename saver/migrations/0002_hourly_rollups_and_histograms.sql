-- adopts: legacy 2
-- Hourly aggregates and value histograms, so statistics over months read hundreds of rows, not millions.

-- The histogram bin of a value: logarithmic bins with 1% relative accuracy (gamma = 1.01 / 0.99).
-- Bins sort like their values: negative values below 0, zero (|v| < 1e-300) at 0, positive above.
-- A bin k of a positive value covers (gamma^(k-1), gamma^k], represented by 2 gamma^k / (gamma + 1).
CREATE FUNCTION value_bin(v double precision) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE
    WHEN abs(v) < 1e-300 THEN 0
    ELSE sign(v)::integer * (10000 + least(9999, greatest(-9999, ceil(ln(abs(v)) / ln(1.01 / 0.99))::integer)))
END;

-- Like rollups_minute, per hour.
CREATE TABLE rollups_hour (
    sensor_id    text             NOT NULL,
    metric_type  text             NOT NULL,
    hour         timestamptz      NOT NULL,
    count        bigint           NOT NULL,
    sum          double precision NOT NULL,
    sum_squares  double precision NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    PRIMARY KEY (sensor_id, metric_type, hour)
);

-- How many readings of each hour fell into each value bin (percentiles).
CREATE TABLE histogram_hour (
    sensor_id    text        NOT NULL,
    metric_type  text        NOT NULL,
    hour         timestamptz NOT NULL,
    bin          integer     NOT NULL,
    count        bigint      NOT NULL,
    PRIMARY KEY (sensor_id, metric_type, hour, bin)
);

-- Readings stored before this migration.
INSERT INTO rollups_hour
SELECT sensor_id, metric_type, date_trunc('hour', minute, 'UTC'), sum(count), sum(sum), sum(sum_squares), min(min), max(max)
FROM rollups_minute GROUP BY 1, 2, 3;

INSERT INTO histogram_hour
SELECT sensor_id, metric_type, date_trunc('hour', reading_time, 'UTC'), value_bin(value), count(*)
FROM readings GROUP BY 1, 2, 3, 4;
