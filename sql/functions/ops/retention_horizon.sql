-- whk.retention_horizon: the oldest time a kind of data is kept from, read from its retention setting in
-- whk_05_configuracoes ('retention.<kind>_days', bounded by whk.config_value_problem; 365 days when the
-- row is absent). Kinds: outbox, delivered, attempts, audit. Everything older may be removed by the
-- retention functions; a replay cannot reach before the outbox horizon.
CREATE OR REPLACE FUNCTION whk.retention_horizon(p_kind text)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_days integer;
BEGIN
    IF p_kind NOT IN ('outbox', 'delivered', 'attempts', 'audit') THEN
        RAISE EXCEPTION 'unknown retention kind %', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use outbox, delivered, attempts or audit';
    END IF;
    SELECT (c.value #>> '{}')::integer INTO v_days
      FROM whk.whk_05_configuracoes c WHERE c.key = 'retention.' || p_kind || '_days';
    RETURN now() - make_interval(days => coalesce(v_days, 365));
END;
$$;
COMMENT ON FUNCTION whk.retention_horizon(text) IS
    'now() minus the retention setting of outbox, delivered, attempts or audit (365 days by default).';
