-- The SQL control plane (docs/dba.md): set or clear (NULL) a consumer's quiet hours, with the API's validation
-- (PUT /api/whk/consumers/{id} "quiet_hours"); bad input raises invalid_parameter_value naming the member,
-- with a HINT, never a bare constraint error:
--   SELECT whk.set_consumer_quiet_hours(7, '{"time_zone": "Europe/Lisbon",
--          "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "07:00"}]}');
-- Returns whether the consumer exists. Audited like any SQL change (whk.audit_sql_change, actor = the role).
CREATE OR REPLACE FUNCTION whk.set_consumer_quiet_hours(p_consumer_id bigint, p_quiet_hours jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text := whk.quiet_hours_problem(p_quiet_hours);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.set_consumer_quiet_hours: quiet_hours%', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'quiet_hours is NULL (none) or {"time_zone": "<IANA name>", "windows": [{"days": '
                         '["mon", …], "start": "HH:MM", "end": "HH:MM"}]} with 1 to 14 windows: docs/delivery.md, '
                         '"Quiet hours". Known zones: SELECT name FROM pg_timezone_names.';
    END IF;
    UPDATE whk.whk_04_assinantes a
    SET quiet_hours = p_quiet_hours, updated_at = clock_timestamp()
    WHERE a.id = p_consumer_id;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION whk.set_consumer_quiet_hours(bigint, jsonb) IS
    'SQL control plane: set or clear a consumer''s quiet hours with the API''s validation (bad input raises with a HINT).';
