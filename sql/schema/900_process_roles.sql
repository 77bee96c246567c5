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
-- The job worker (`whk worker`, which `whk dispatcher` starts by default) runs with the dispatcher's role:
-- it takes and finishes pgqueuer jobs. The API enqueues only through SECURITY DEFINER functions
-- (whk.enqueue_notice); it and the read-only role may only look at the jobs and schedules (health, the
-- dashboard, `whk jobs`).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'S') AND c.relname LIKE 'pgqueuer%'
        ORDER BY c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE whk.%I TO whk_dispatcher', r.relname);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.%I TO whk_dispatcher', r.relname);
            EXECUTE format('GRANT SELECT ON TABLE whk.%I TO whk_app, whk_readonly', r.relname);
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
