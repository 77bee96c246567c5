-- 0006 api: API keys, append-only audit trail, shared API rate-limit state and the whk_app role.
-- Readable sources: sql/schema/6xx_*.sql and sql/functions/api_rate_limit_hit.sql (kept equal by the drift test).
BEGIN;
SELECT whk.migration_begin(6, 'api');

-- ===== 600_api_role.sql
-- The application role of the API. NOLOGIN: deployments create a login role that is a member of it (or
-- set WHK_API_DB_ROLE=whk_app so the API does SET ROLE on every pooled connection). It may read and write
-- every WHK table except the audit trail, which it may only read and append to (grants in 620_audit_log).
-- Roles are cluster-wide: created only when absent so every database of a cluster can share it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'whk_app') THEN
        CREATE ROLE whk_app NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA whk TO whk_app;
-- Every WHK table and sequence that exists now, except pgqueuer's own objects: the API reaches the job
-- queue only through SECURITY DEFINER functions, and pgqueuer's DDL stays exactly what it installs.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p', 'u', 'S') AND c.relname NOT LIKE 'pgqueuer%'
        ORDER BY c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE whk.%I TO whk_app', r.relname);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.%I TO whk_app', r.relname);
        END IF;
    END LOOP;
END;
$$;
-- Tables and sequences created later by the migrating role get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO whk_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO whk_app;

-- ===== 610_api_keys.sql
-- API keys: shown once at creation, stored as SHA-256 of the whole key (the key carries 256 random bits,
-- so a fast hash is enough; no plaintext ever reaches the database). ``prefix`` is the non-secret part
-- used to find the row (whk_<prefix>_<secret>); the hash is then compared in constant time by the API.
CREATE TABLE whk.api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL CHECK (prefix ~ '^[a-z0-9]{12}$'),
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    -- NULL consumer = admin key (is_admin must then be true): admins see every tenant.
    consumer_id  bigint      REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    is_admin     boolean     NOT NULL DEFAULT false,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes       text[]      NOT NULL DEFAULT '{*}' CHECK (cardinality(scopes) > 0),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    revoked_by   text,
    -- Refreshed at most once a minute per key (not on every request).
    last_used_at timestamptz,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    CONSTRAINT api_keys_owner_check CHECK ((consumer_id IS NULL) = is_admin)
);
COMMENT ON TABLE whk.api_keys IS
    'API keys (hashed). Revocation is read on every request: effective for the next request after commit.';
CREATE INDEX api_keys_consumer_idx ON whk.api_keys (consumer_id, id);

-- ===== 620_audit_log.sql
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

-- ===== 630_api_rate_limits.sql
-- API rate-limit state shared by every API process: one GCRA "theoretical arrival time" per subject
-- (consumer:<id>, or the admin credential). UNLOGGED: after a crash the limits simply start afresh.
CREATE UNLOGGED TABLE whk.api_rate_limits (
    subject text        PRIMARY KEY,
    tat     timestamptz NOT NULL
);
COMMENT ON TABLE whk.api_rate_limits IS 'GCRA state of the per-consumer API rate limit (see api_rate_limit_hit).';

-- ===== api_rate_limit_hit.sql
-- whk.api_rate_limit_hit: count one API request of p_subject against a GCRA limit of p_limit requests per
-- p_window_s seconds (bursts up to p_limit). One row lock per subject serialises that subject's requests
-- across every API process; other subjects never wait. p_limit NULL = the global default
-- (whk_05_configuracoes 'rate_limit.api_per_minute', scaled to the window). p_now is injectable for tests.
CREATE OR REPLACE FUNCTION whk.api_rate_limit_hit(
    p_subject text,
    p_limit integer,
    p_window_s double precision DEFAULT 60,
    p_now timestamptz DEFAULT clock_timestamp()
)
RETURNS TABLE (allowed boolean, limit_count integer, remaining integer, retry_after_s double precision,
               reset_s double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_limit    integer := p_limit;
    v_interval double precision;          -- seconds between requests at the sustained rate
    v_tolerance double precision;         -- how far ahead of now the TAT may run (the burst)
    v_tat      timestamptz;
    v_ahead    double precision;
BEGIN
    IF v_limit IS NULL THEN
        SELECT ceil((c.value #>> '{}')::numeric * p_window_s / 60)::integer INTO v_limit
        FROM whk.whk_05_configuracoes c WHERE c.key = 'rate_limit.api_per_minute';
        v_limit := coalesce(v_limit, 600);
    END IF;
    v_interval := p_window_s / v_limit;
    v_tolerance := p_window_s - v_interval;

    INSERT INTO whk.api_rate_limits AS r (subject, tat) VALUES (p_subject, p_now)
    ON CONFLICT (subject) DO NOTHING;
    SELECT r.tat INTO v_tat FROM whk.api_rate_limits r WHERE r.subject = p_subject FOR UPDATE;
    v_tat := greatest(v_tat, p_now);
    v_ahead := extract(epoch FROM v_tat - p_now);

    IF v_ahead > v_tolerance + 1e-6 THEN
        allowed := false;
        limit_count := v_limit;
        remaining := 0;
        retry_after_s := v_ahead - v_tolerance;
        reset_s := v_ahead;
        RETURN NEXT;
        RETURN;
    END IF;

    v_tat := v_tat + make_interval(secs => v_interval);
    UPDATE whk.api_rate_limits r SET tat = v_tat WHERE r.subject = p_subject;
    v_ahead := v_ahead + v_interval;
    allowed := true;
    limit_count := v_limit;
    remaining := greatest(0, floor((p_window_s - v_ahead) / v_interval + 1e-6)::integer);
    retry_after_s := 0;
    reset_s := v_ahead;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION whk.api_rate_limit_hit(text, integer, double precision, timestamptz) IS
    'GCRA rate limit shared across API processes: allowed?, limit, remaining, retry-after and reset seconds.';

COMMIT;
