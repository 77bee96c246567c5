-- whk.emit_system: the platform's own events, system.startup | shutdown | health_check | backup_completed.
-- The dispatcher and the API call it when they start and stop; DBAs call it after a backup, e.g.
--   SELECT whk.emit_system('backup_completed', 'pg_basebackup', '{"label": "nightly", "bytes": 123}');
-- health_check with details NULL attaches whk.system_health() (outbox backlog, live dispatchers).
CREATE OR REPLACE FUNCTION whk.emit_system(kind text, component text DEFAULT 'database', details jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF kind IS NULL OR kind NOT IN ('startup', 'shutdown', 'health_check', 'backup_completed') THEN
        RAISE EXCEPTION 'unknown system event kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use startup, shutdown, health_check or backup_completed';
    END IF;
    RETURN whk.emit(
        'system.' || kind,
        jsonb_build_object(
            'component', coalesce(component, 'database'),
            'database', current_database(),
            'details', coalesce(details, CASE WHEN kind = 'health_check' THEN whk.system_health() END, '{}'::jsonb)),
        'system');
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.emit_system(text, text, jsonb) FROM PUBLIC;
-- The dispatcher announces its own start and stop.
GRANT EXECUTE ON FUNCTION whk.emit_system(text, text, jsonb) TO whk_dispatcher;
COMMENT ON FUNCTION whk.emit_system(text, text, jsonb) IS
    'Emit system.startup|shutdown|health_check|backup_completed from a service or a DBA script.';
