-- The credentials issued to devices (DevicesService.IssueToken): what the registry keeps of each,
-- never its secret. A revoked credential keeps its row, with the time it was revoked; deleting a
-- device revokes its credentials.
CREATE TABLE registry.credentials (
    credential_id text        PRIMARY KEY,
    device_id     text        NOT NULL REFERENCES registry.devices,
    -- metrics.v1.CredentialKind: 1 token.
    kind          smallint    NOT NULL,
    create_time   timestamptz NOT NULL,
    expire_time   timestamptz NOT NULL,
    revoke_time   timestamptz
);
-- A device's live credentials.
CREATE INDEX credentials_of_device ON registry.credentials (device_id, create_time) WHERE revoke_time IS NULL;

GRANT SELECT, INSERT, UPDATE ON registry.credentials TO metrics_registry;

-- A device's live credentials (neither revoked nor expired), oldest first, as JSON: [[id, kind,
-- create µs, expire µs], ...]. Every query of a device reads them with it (registry/store.py).
CREATE FUNCTION registry.live_credentials(device text) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(json_agg(json_build_array(
               credential_id, kind, (extract(epoch FROM create_time) * 1000000)::bigint,
               (extract(epoch FROM expire_time) * 1000000)::bigint
           ) ORDER BY create_time, credential_id), '[]')::text
    FROM registry.credentials
    WHERE device_id = device AND revoke_time IS NULL AND expire_time > now()
$$;
