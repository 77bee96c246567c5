-- The migration ledger (created by migration 0001). One row per applied migration file.
CREATE SCHEMA IF NOT EXISTS whk;
COMMENT ON SCHEMA whk IS 'WHK webhook platform: outbox, subscriptions, deliveries and their SQL API.';

CREATE TABLE IF NOT EXISTS whk.schema_migrations (
    version    integer     PRIMARY KEY CHECK (version > 0),
    name       text        NOT NULL CHECK (name ~ '^[a-z0-9_]+$'),
    checksum   text        CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text        NOT NULL DEFAULT current_user
);
COMMENT ON TABLE whk.schema_migrations IS
    'Ledger of applied migrations. checksum is NULL when a DBA applied the file with psql; '
    '`whk db migrate` records it on its next run.';
