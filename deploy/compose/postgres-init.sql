-- PostgreSQL of docker-compose.yml, on its first start (an empty data volume): the roles and the
-- database that stack/bootstrap.py makes for the local stack, with passwords, since the image
-- checks them on TCP. Development credentials: the port is published on 127.0.0.1 only.
--   metrics         owns the database and the schema; the saver, which applies the migrations
--   metrics_reader  read-only; the assessor
-- The DSNs in docker-compose.yml and tests/targets/compose.toml carry these passwords.
CREATE ROLE metrics LOGIN PASSWORD 'metrics';
CREATE ROLE metrics_reader LOGIN PASSWORD 'metrics_reader';
ALTER ROLE metrics_reader SET default_transaction_read_only = on;
CREATE DATABASE metrics OWNER metrics;

\connect metrics
-- The reader may read whatever the owner's migrations create, and nothing more.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO metrics_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO metrics_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE metrics IN SCHEMA public GRANT SELECT ON TABLES TO metrics_reader;
