-- adopts: legacy 7
-- Alarms (processor/stream/alarms.py): rules with a clear count raise them and clear them.
-- The alarm an event is a change of, and the alarm as it left it (metrics.v1.Alarm, protobuf).
ALTER TABLE events
    ADD COLUMN alarm_id text NOT NULL DEFAULT '',
    ADD COLUMN alarm    bytea;
-- Every alarm, from the events of its changes (saver/store.py merges them, in any order). While an
-- alarm is active its match count and latest match are those of the raise, or of a change by hand;
-- AlarmsService reads the live ones from Redis, and the acts of operators from its own table
-- (processor/control/migrations).
CREATE TABLE alarms (
    alarm_id         text             PRIMARY KEY,
    sensor_id        text             NOT NULL,
    rule_id          text             NOT NULL,
    metric_type      text             NOT NULL,
    severity         smallint         NOT NULL,
    threshold        double precision NOT NULL,
    raise_time       timestamptz      NOT NULL,
    raise_value      double precision NOT NULL,
    match_count      bigint           NOT NULL,
    last_match_time  timestamptz      NOT NULL,
    last_match_value double precision NOT NULL,
    clear_time       timestamptz,
    cleared_by       text,
    acknowledge_time timestamptz,
    acknowledged_by  text
);
-- ListAlarms: most recently raised first, for all sensors or one.
CREATE INDEX alarms_by_raise_time ON alarms (raise_time DESC, alarm_id DESC);
CREATE INDEX alarms_by_sensor ON alarms (sensor_id, raise_time DESC, alarm_id DESC);
-- The active ones, which operators ask for most.
CREATE INDEX alarms_active ON alarms (raise_time DESC, alarm_id DESC) WHERE clear_time IS NULL;
