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
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA whk TO whk_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA whk TO whk_app;
-- Tables and sequences created later by the migrating role get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO whk_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO whk_app;
