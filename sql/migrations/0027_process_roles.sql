-- 0027 process_roles: each WHK process gets its own least-privilege role; `whk up` reports its children.
-- Why: the API and the dispatcher ran as the migrating role (the superuser on `whk up`'s private server),
-- as which DELETE and TRUNCATE of the append-only audit trail succeed. Roles (NOLOGIN; `whk up` gives them
-- LOGIN on its private server, docs/dba.md shows other deployments):
--   whk_app        the API (since 0006) + EXECUTE on whk.register_event_type;
--   whk_dispatcher DML on every WHK table but the API's own, INSERT only on the audit trail, EXECUTE on
--                  whk.dispatcher_set_idle and whk.emit_system;
--   whk_readonly   SELECT on every WHK table.
-- None of them may UPDATE, DELETE or TRUNCATE whk.audit_log. Default privileges give tables created by
-- later migrations the same grants. whk.supervised_processes: the children a `whk up` supervises (state,
-- restarts, last exit cause), read by /api/whk/monitoring/health.
-- Readable sources: sql/schema/900_process_roles.sql, sql/schema/910_supervised_processes.sql and the
-- GRANT lines of sql/functions/{emit_system,dispatcher_set_idle,register_event_type}.sql.
BEGIN;
SELECT whk.migration_begin(27, 'process_roles');

-- ===== 900_process_roles.sql
-- One least-privilege role per WHK process, so no process can rewrite the audit trail or change the schema:
--   whk_app        the API (600_api_role): every WHK table, the audit trail only SELECT and INSERT;
--   whk_dispatcher the dispatcher: every WHK table except the API's own (API keys, API rate limits,
--                  dev-mock captures), which it never reads; the audit trail only INSERT (a webhook the
--                  dispatcher disables, e.g. on 410 Gone, is audited like one an admin disables);
--   whk_readonly   dashboards, reports and psql sessions that only look: SELECT on every WHK table.
-- NOLOGIN: `whk up` gives them LOGIN on its private server; elsewhere a DBA does, or grants them to login
-- roles (docs/dba.md). The functions a role needs beyond PUBLIC's carry their GRANT in their own file.
-- Roles are cluster-wide: created only when absent so every database of a cluster can share them.
-- This file comes after every table: tables created later (later files, later migrations) get the same
-- grants from the default privileges at the end.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'whk_dispatcher') THEN
        CREATE ROLE whk_dispatcher NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'whk_readonly') THEN
        CREATE ROLE whk_readonly NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA whk TO whk_dispatcher, whk_readonly;
-- Every WHK table, view and sequence that exists now, except pgqueuer's own objects (its DDL stays exactly
-- what it installs) and, for the dispatcher, the API's tables.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p', 'u', 'v', 'm', 'S') AND c.relname NOT LIKE 'pgqueuer%'
        ORDER BY c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE whk.%I TO whk_dispatcher', r.relname);
            EXECUTE format('GRANT SELECT ON SEQUENCE whk.%I TO whk_readonly', r.relname);
        ELSE
            IF r.relname = 'audit_log' THEN
                EXECUTE 'GRANT INSERT ON TABLE whk.audit_log TO whk_dispatcher';
            ELSIF r.relname NOT IN ('api_keys', 'api_rate_limits', 'mock_requests') THEN
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.%I TO whk_dispatcher', r.relname);
            END IF;
            EXECUTE format('GRANT SELECT ON TABLE whk.%I TO whk_readonly', r.relname);
        END IF;
    END LOOP;
END;
$$;
-- Tables and sequences created later by the migrating role get the same grants (never TRUNCATE: a table
-- that must stay append-only, like the audit trail, only has to revoke UPDATE and DELETE).
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO whk_dispatcher;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO whk_dispatcher;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT ON TABLES TO whk_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT ON SEQUENCES TO whk_readonly;

-- ===== functions: EXECUTE beyond PUBLIC's
GRANT EXECUTE ON FUNCTION whk.emit_system(text, text, jsonb) TO whk_dispatcher;
GRANT EXECUTE ON FUNCTION whk.dispatcher_set_idle(text, boolean) TO whk_dispatcher;
GRANT EXECUTE ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text) TO whk_app;

-- ===== 910_supervised_processes.sql
-- The child processes a `whk up` supervises (API, dispatcher, ...), written by that `whk up` and read by
-- /api/whk/monitoring/health: a child that keeps crashing is reported there while PostgreSQL and the
-- other children stay up. The supervisor refreshes updated_at while it runs and deletes its rows when it
-- stops; rows it left behind (killed with -9) are ignored once stale.
CREATE TABLE whk.supervised_processes (
    supervisor  text        NOT NULL CHECK (length(supervisor) BETWEEN 1 AND 200),
    name        text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    pid         integer,
    -- running: up; restarting: waiting out its backoff after a crash; failing: crashed max_crashes times
    -- within the window, retried at the longest backoff.
    state       text        NOT NULL CHECK (state IN ('running', 'restarting', 'failing')),
    restarts    integer     NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    crashes_in_window integer NOT NULL DEFAULT 0 CHECK (crashes_in_window >= 0),
    last_exit   text        CHECK (length(last_exit) <= 200),
    last_exit_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supervisor, name)
);
COMMENT ON TABLE whk.supervised_processes IS
    'Children of each running `whk up` (state, restarts, last exit cause); read by the health endpoint.';

COMMIT;
