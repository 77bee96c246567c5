-- Audit trail: one row per API mutation, written in the mutation's own transaction (both commit or
-- neither), plus security events (denied source address). Secrets are removed before the row is built.
CREATE TABLE whk.audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    -- The tenant the row belongs to (NULL = platform-wide); consumers read only their own rows.
    consumer_id bigint,
    action      text        NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    target_type text        NOT NULL,
    target_id   text,
    before      jsonb,
    after       jsonb,
    request_id  text,
    source_ip   inet
);
COMMENT ON TABLE whk.audit_log IS
    'Append-only audit trail (the whk_app role has SELECT and INSERT only). Secrets are never stored here.';
CREATE INDEX audit_log_consumer_idx ON whk.audit_log (consumer_id, id DESC);
CREATE INDEX audit_log_target_idx ON whk.audit_log (target_type, target_id, id DESC);
CREATE INDEX audit_log_occurred_idx ON whk.audit_log (occurred_at DESC, id DESC);
-- Append-only for the application: no UPDATE, DELETE or TRUNCATE, whatever the schema-wide grants say.
REVOKE UPDATE, DELETE, TRUNCATE ON whk.audit_log FROM whk_app;
