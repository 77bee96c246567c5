-- Why a global setting's value (whk_05_configuracoes) is refused, or NULL when it is fine. DBAs change these
-- with plain SQL, and the dispatcher and the API read them inside their arithmetic (token buckets, breaker
-- periods, the API's rate limit), so every numeric setting has bounds; keys WHK does not know are not
-- checked. `SELECT key, whk.config_value_problem(key, value) FROM whk.whk_05_configuracoes` lists problems.
CREATE OR REPLACE FUNCTION whk.config_value_problem(p_key text, p_value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    CASE p_key
    WHEN 'retry.policy' THEN
        RETURN whk.retry_policy_problem(p_value);
    WHEN 'delivery.breaker' THEN
        RETURN whk.breaker_config_problem(p_value);
    WHEN 'rate_limit.webhook_default' THEN
        IF jsonb_typeof(p_value) <> 'object' THEN
            RETURN 'rate_limit.webhook_default must be a JSON object';
        END IF;
        SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
        FROM jsonb_object_keys(p_value - ARRAY['per_second', 'burst', 'max_in_flight']) AS k;
        IF v_unknown IS NOT NULL THEN
            RETURN format('unknown member %s (known: per_second, burst, max_in_flight)', v_unknown);
        END IF;
        RETURN coalesce(
            whk.setting_number_problem('per_second', p_value -> 'per_second', 0.001, 1000000, false, true),
            whk.setting_number_problem('burst', p_value -> 'burst', 1, 1000000, true, true),
            whk.setting_number_problem('max_in_flight', p_value -> 'max_in_flight', 1, 1000, true, true));
    WHEN 'rate_limit.api_per_minute' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 1000000000, true);
    WHEN 'security.rotation_grace_hours' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 720);
    WHEN 'security.max_old_keys' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 100, true);
    WHEN 'delivery.auto_disable_after_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 60, 31536000);
    WHEN 'delivery.response_body_max_bytes' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 1048576, true);
    WHEN 'monitoring.oldest_pending_warn_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 604800);
    -- The development mock endpoints' table stays bounded (whk.mock_record trims by these).
    WHEN 'dev.mock_keep_per_name' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 10000, true);
    WHEN 'dev.mock_max_rows' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1000, 1000000, true);
    WHEN 'dev.mock_retention_hours' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 720);
    -- Retention (whk.retention_* functions, the worker's `retention` schedule): whole days. The audit trail
    -- keeps at least 30 days whatever a writer of this table sets, so a role that may change settings
    -- cannot make the retention job erase recent audit rows.
    WHEN 'retention.outbox_days', 'retention.delivered_days', 'retention.attempts_days' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 3650, true);
    WHEN 'retention.audit_days' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 30, 3650, true);
    ELSE
        RETURN NULL;
    END CASE;
END;
$$;
COMMENT ON FUNCTION whk.config_value_problem(text, jsonb) IS
    'Why a whk_05_configuracoes value is out of bounds (NULL = fine; unknown keys are not checked).';
