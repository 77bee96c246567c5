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
    -- Each key spelled out: a reader of a setting names it (tests/unit/test_settings_read.py).
    v_key  text := CASE p_kind WHEN 'outbox' THEN 'retention.outbox_days'
                               WHEN 'delivered' THEN 'retention.delivered_days'
                               WHEN 'attempts' THEN 'retention.attempts_days'
                               WHEN 'audit' THEN 'retention.audit_days' END;
BEGIN
    IF v_key IS NULL THEN
        RAISE EXCEPTION 'unknown retention kind %', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use outbox, delivered, attempts or audit';
    END IF;
    SELECT (c.value #>> '{}')::integer INTO v_days
      FROM whk.whk_05_configuracoes c WHERE c.key = v_key;
    RETURN now() - make_interval(days => coalesce(v_days, 365));
END;
$$;
COMMENT ON FUNCTION whk.retention_horizon(text) IS
    'now() minus the retention setting of outbox, delivered, attempts or audit (365 days by default).';
