#!/bin/bash
# PostgreSQL of docker-compose.yml, on its first start (an empty data volume): the roles and the
# database that stack/bootstrap.py makes for the local stack, with their passwords read from the
# Docker secrets (psql reads them itself, with \set and backquotes: no password on a command line).
#   metrics            owns the database and the schema; every service's migrations run as it
#   metrics_writer     the saver: reads and writes its tables, changes no schema
#   metrics_reader     the assessor: read-only
#   metrics_processor  the processor: its tables (the rules, the acts on alarms), reads the alarms
#   metrics_notifier   the notifier: the schema notifier only
#   metrics_registry   the registry: the schema registry only
# What each may do with the tables, their owners' migrations grant (runtime/migrations.py).
set -euo pipefail
# psql would set an empty password (no login) if it could not read one: stop instead.
for role in metrics metrics_writer metrics_reader metrics_processor metrics_notifier metrics_registry; do
  [ -r "/run/secrets/postgres-$role" ] && [ -s "/run/secrets/postgres-$role" ] \
    || { echo "cannot read a password in /run/secrets/postgres-$role" >&2; exit 1; }
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\set owner `cat /run/secrets/postgres-metrics`
\set writer `cat /run/secrets/postgres-metrics_writer`
\set reader `cat /run/secrets/postgres-metrics_reader`
\set processor `cat /run/secrets/postgres-metrics_processor`
\set notifier `cat /run/secrets/postgres-metrics_notifier`
\set registry `cat /run/secrets/postgres-metrics_registry`
CREATE ROLE metrics LOGIN PASSWORD :'owner';
CREATE ROLE metrics_writer LOGIN PASSWORD :'writer';
CREATE ROLE metrics_reader LOGIN PASSWORD :'reader';
CREATE ROLE metrics_processor LOGIN PASSWORD :'processor';
CREATE ROLE metrics_notifier LOGIN PASSWORD :'notifier';
CREATE ROLE metrics_registry LOGIN PASSWORD :'registry';
ALTER ROLE metrics_reader SET default_transaction_read_only = on;
CREATE DATABASE metrics OWNER metrics;

\connect metrics
-- Only the owner may create anything in the schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO metrics_reader, metrics_writer, metrics_processor;
SQL

# The cluster profile (docker-compose.yml, METRICS_REPLICATION=on): the streaming replica's role,
# replicator, may stream WAL from the Compose network with its password (postgres-replica-init makes
# the role; a replication connection matches no `all` line of pg_hba.conf, so it needs its own).
if [ "${METRICS_REPLICATION:-off}" = on ]; then
  echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
