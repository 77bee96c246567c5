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
-- The deliveries view (whk.whk_03_entregas, over the live queue and the history) is read like a table; the
-- grant is a table's, as the default privileges below give every relation created later (a view without
-- rules refuses writes whatever the grant).
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.whk_03_entregas TO whk_app;
-- Tables and sequences created later by the migrating role get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO whk_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO whk_app;
