-- What operators did to alarms through AlarmsService: acknowledged or cleared one, who and when. The
-- alarms are the saver's (kept from the events of their changes, which AlarmsService produces too);
-- an alarm as AlarmsService shows it is the saver's row merged with the act recorded here, so that
-- an act shows at once, before its event reaches the saver. A row is also the lock that keeps two
-- acts on one alarm from racing (SELECT … FOR UPDATE).
CREATE TABLE alarm_actions (
    alarm_id         text             PRIMARY KEY,
    acknowledge_time timestamptz,
    acknowledged_by  text,
    clear_time       timestamptz,
    cleared_by       text,
    -- A clear by hand: the alarm's match count and latest match as it left them.
    match_count      bigint,
    last_match_time  timestamptz,
    last_match_value double precision
);

-- Only the processor (metrics_processor) uses its tables. The schema's default privileges once gave
-- the saver's writer and the assessor's reader every table of the schema: not these.
REVOKE ALL ON rules, rules_seeded, alarm_actions FROM metrics_writer, metrics_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON rules, rules_seeded, alarm_actions TO metrics_processor;
