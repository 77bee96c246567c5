-- whk.migration_begin: called first by every migration file (ledger row first, serialised, gapless).
CREATE OR REPLACE FUNCTION whk.migration_begin(p_version integer, p_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_latest integer;
BEGIN
    -- One runner at a time, whether it is `whk db migrate` or a DBA's psql session; the lock is
    -- re-entrant for the runner, which already holds it at session level.
    PERFORM pg_advisory_xact_lock(hashtext('whk.schema_migrations'));

    IF EXISTS (SELECT 1 FROM whk.schema_migrations WHERE version = p_version) THEN
        RAISE EXCEPTION 'migration % (%) is already applied', lpad(p_version::text, 4, '0'), p_name
            USING ERRCODE = 'unique_violation',
                  HINT = 'migrations are forward-only; `whk db status` lists what is applied';
    END IF;

    SELECT max(version) INTO v_latest FROM whk.schema_migrations;
    IF coalesce(v_latest, 0) <> p_version - 1 THEN
        RAISE EXCEPTION 'migration % (%) cannot follow version %', lpad(p_version::text, 4, '0'), p_name,
            coalesce(v_latest, 0)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'apply the migrations in order; `whk db plan` prints what is pending';
    END IF;

    INSERT INTO whk.schema_migrations (version, name, checksum)
    VALUES (p_version, p_name, nullif(current_setting('whk.migration_checksum', true), ''));
END;
$$;
COMMENT ON FUNCTION whk.migration_begin(integer, text) IS
    'Called first by every migration: serialises runners, refuses re-applies and gaps, writes the ledger row.';

