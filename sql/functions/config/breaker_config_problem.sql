-- Why circuit-breaker settings (whk_01_webhooks.breaker_config, whk_05_configuracoes 'delivery.breaker') are
-- refused, or NULL when they are fine. whk.record_outcomes reads failure_threshold as an integer and the open
-- periods as seconds it multiplies and doubles, so each has bounds: failure_threshold 1..1000,
-- open_s 0.001..86400, open_max_s 0.001..604800 (whk/breaker.py BreakerConfig has the same members and
-- bounds). Members may be left out (the global setting, then the built-in default, applies).
-- STRICT: NULL = no override.
CREATE OR REPLACE FUNCTION whk.breaker_config_problem(p_config jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    IF jsonb_typeof(p_config) <> 'object' THEN
        RETURN 'breaker settings must be a JSON object';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_config - ARRAY['failure_threshold', 'open_s', 'open_max_s']) AS k;
    IF v_unknown IS NOT NULL THEN
        RETURN format('unknown member %s (known: failure_threshold, open_s, open_max_s)', v_unknown);
    END IF;
    RETURN coalesce(
        whk.setting_number_problem('failure_threshold', p_config -> 'failure_threshold', 1, 1000, true),
        whk.setting_number_problem('open_s', p_config -> 'open_s', 0.001, 86400),
        whk.setting_number_problem('open_max_s', p_config -> 'open_max_s', 0.001, 604800));
END;
$$;
COMMENT ON FUNCTION whk.breaker_config_problem(jsonb) IS
    'Why circuit-breaker settings are out of bounds (NULL = fine); see the function''s header for the bounds.';
