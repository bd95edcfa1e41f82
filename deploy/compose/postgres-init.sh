#!/bin/bash
# PostgreSQL of docker-compose.yml, on its first start (an empty data volume): the roles and the
# database that stack/bootstrap.py makes for the local stack, with their passwords read from the
# Docker secrets (psql reads them itself, with \set and backquotes: no password on a command line).
#   metrics           owns the database and the schema; the saver's migrations
#   metrics_writer    reads and writes the tables, changes no schema; the saver
#   metrics_reader    read-only; the assessor
#   metrics_notifier  the schema notifier only (the migration that makes it grants it)
set -euo pipefail
# psql would set an empty password (no login) if it could not read one: stop instead.
for role in metrics metrics_writer metrics_reader metrics_notifier; do
  [ -r "/run/secrets/postgres-$role" ] && [ -s "/run/secrets/postgres-$role" ] \
    || { echo "cannot read a password in /run/secrets/postgres-$role" >&2; exit 1; }
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\set owner `cat /run/secrets/postgres-metrics`
\set writer `cat /run/secrets/postgres-metrics_writer`
\set reader `cat /run/secrets/postgres-metrics_reader`
\set notifier `cat /run/secrets/postgres-metrics_notifier`
CREATE ROLE metrics LOGIN PASSWORD :'owner';
CREATE ROLE metrics_writer LOGIN PASSWORD :'writer';
CREATE ROLE metrics_reader LOGIN PASSWORD :'reader';
CREATE ROLE metrics_notifier LOGIN PASSWORD :'notifier';
ALTER ROLE metrics_reader SET default_transaction_read_only = on;
CREATE DATABASE metrics OWNER metrics;

\connect metrics
-- The reader may read, the writer read and write, whatever the owner's migrations create; neither
-- may create anything in the schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO metrics_reader, metrics_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE metrics IN SCHEMA public GRANT SELECT ON TABLES TO metrics_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE metrics IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO metrics_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE metrics IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO metrics_writer;
SQL

# The cluster profile (docker-compose.yml, METRICS_REPLICATION=on): the streaming replica's role,
# replicator, may stream WAL from the Compose network with its password (postgres-replica-init makes
# the role; a replication connection matches no `all` line of pg_hba.conf, so it needs its own).
if [ "${METRICS_REPLICATION:-off}" = on ]; then
  echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
