-- adopts: legacy 5
-- Webhook subscriptions and what they have yet to deliver: the notifier's tables (notifier/store.py).
-- They hold the subscriptions' secrets: a schema of their own, which only the notifier's role
-- (metrics_notifier) may use. The grants on the schema public (stack/bootstrap.py, the default
-- privileges) give the saver's and the assessor's roles nothing here.
CREATE SCHEMA notifier;

CREATE TABLE notifier.subscriptions (
    subscription_id      uuid        PRIMARY KEY,
    url                  text        NOT NULL,
    secret               text        NOT NULL,
    -- The filters; the empty prefix, no kinds and severity 0 match every event.
    sensor_id_prefix     text        NOT NULL DEFAULT '',
    kinds                smallint[]  NOT NULL DEFAULT '{}',
    minimum_severity     smallint    NOT NULL DEFAULT 0,
    create_time          timestamptz NOT NULL DEFAULT now(),
    -- metrics.v1.DeliveryState: 1 healthy, 2 failing, 3 dead-lettered.
    state                smallint    NOT NULL DEFAULT 1,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    last_error           text        NOT NULL DEFAULT '',
    last_failure_time    timestamptz,
    last_success_time    timestamptz,
    dead_letter_time     timestamptz,
    delivered_count      bigint      NOT NULL DEFAULT 0
);
-- ListSubscriptions: oldest first, ties by id.
CREATE INDEX subscriptions_by_create_time ON notifier.subscriptions (create_time, subscription_id);

-- An event to deliver to a subscription, once per pair: a Kafka record read again queues nothing
-- twice (delivered rows are kept for a while for that, then removed).
CREATE TABLE notifier.deliveries (
    subscription_id   uuid        NOT NULL REFERENCES notifier.subscriptions ON DELETE CASCADE,
    event_id          uuid        NOT NULL,
    sensor_id         text        NOT NULL,
    -- The order the events were read in: a subscription gets each sensor's events in this order.
    seq               bigint      NOT NULL,
    -- The metrics.v1.Event, protobuf binary encoding, as the events topic held it.
    event             bytea       NOT NULL,
    detect_time       timestamptz NOT NULL,
    -- 1 pending, 2 delivered, 3 dead-lettered (with its subscription).
    state             smallint    NOT NULL DEFAULT 1,
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    -- An attempt in flight: no other attempt until this time (a notifier that died mid-attempt
    -- leaves it to be tried again then).
    lease_until       timestamptz,
    last_error        text        NOT NULL DEFAULT '',
    done_time         timestamptz,
    PRIMARY KEY (subscription_id, event_id)
);
-- The head of each (subscription, sensor) queue: the pending delivery with the lowest seq.
CREATE INDEX deliveries_pending ON notifier.deliveries (subscription_id, sensor_id, seq) WHERE state = 1;
CREATE INDEX deliveries_dead ON notifier.deliveries (subscription_id, seq) WHERE state = 3;
CREATE INDEX deliveries_done ON notifier.deliveries (done_time) WHERE state = 2;
-- A number per round of events read: seq = round * 65536 + the event's place in its round.
CREATE SEQUENCE notifier.delivery_rounds;

-- The notifier's role is made with the others (stack/bootstrap.py, deploy/compose/postgres-init.sh).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'metrics_notifier') THEN
        GRANT USAGE ON SCHEMA notifier TO metrics_notifier;
        GRANT SELECT, INSERT, UPDATE, DELETE ON notifier.subscriptions, notifier.deliveries TO metrics_notifier;
        GRANT USAGE ON SEQUENCE notifier.delivery_rounds TO metrics_notifier;
    END IF;
END
$$;
