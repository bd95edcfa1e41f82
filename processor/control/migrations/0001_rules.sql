-- adopts: legacy 4
-- Threshold rules changed at run time (rule_store.py). A deleted rule keeps its row
-- (delete_time): the processors publish its deletion on the rules topic from it.
CREATE TABLE rules (
    rule_id          text             PRIMARY KEY,
    metric_type      text             NOT NULL,
    sensor_id_prefix text             NOT NULL,
    threshold        double precision NOT NULL,
    comparison       smallint         NOT NULL,
    count            integer          NOT NULL,
    severity         smallint         NOT NULL,
    enabled          boolean          NOT NULL,
    version          bigint           NOT NULL,
    create_time      timestamptz      NOT NULL,
    update_time      timestamptz      NOT NULL,
    delete_time      timestamptz
);
-- ListRules: oldest first.
CREATE INDEX rules_by_create_time ON rules (create_time, rule_id) WHERE delete_time IS NULL;
-- Once the environment's rules (METRICS_PROCESSOR_RULES) have been stored, the API owns the rules.
CREATE TABLE rules_seeded (
    seeded_at timestamptz NOT NULL DEFAULT now(),
    only_row  boolean     PRIMARY KEY DEFAULT true CHECK (only_row)
);
