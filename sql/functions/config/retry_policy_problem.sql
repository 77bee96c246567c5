-- Why a retry policy (whk_01_webhooks.retry_policy, whk_05_configuracoes 'retry.policy') is refused, or NULL
-- when it is fine. The bounds are the API's (api/webhooks/schemas.py RetryPolicy) and the dispatcher's
-- (dispatcher/retry.py), so a policy written with plain SQL is held to what the API would accept; members
-- may be left out (whk.effective_retry_policy lays a partial policy over the global one). STRICT: NULL = no
-- override.
CREATE OR REPLACE FUNCTION whk.retry_policy_problem(p_policy jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    IF jsonb_typeof(p_policy) <> 'object' THEN
        RETURN 'a retry policy must be a JSON object';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_policy - ARRAY['schedule_s', 'jitter', 'throttle_floor_s', 'retry_after_cap_factor',
                                            'retry_blocked']) AS k;
    IF v_unknown IS NOT NULL THEN
        RETURN format('unknown member %s (known: schedule_s, jitter, throttle_floor_s, retry_after_cap_factor, '
                      'retry_blocked)', v_unknown);
    END IF;
    IF p_policy ? 'schedule_s'
       AND (jsonb_typeof(p_policy -> 'schedule_s') <> 'array' OR jsonb_array_length(p_policy -> 'schedule_s') > 30) THEN
        RETURN 'schedule_s must be a list of at most 30 delays in seconds';
    END IF;
    RETURN coalesce(
        (SELECT s.problem
         FROM (SELECT whk.setting_number_problem(format('schedule_s[%s]', e.i - 1), e.v, 0.001, 604800) AS problem, e.i
               FROM jsonb_array_elements(p_policy -> 'schedule_s') WITH ORDINALITY AS e (v, i)) s
         WHERE s.problem IS NOT NULL
         ORDER BY s.i LIMIT 1),
        whk.setting_number_problem('jitter', p_policy -> 'jitter', 0, 0.99),
        whk.setting_number_problem('throttle_floor_s', p_policy -> 'throttle_floor_s', 0, 86400),
        whk.setting_number_problem('retry_after_cap_factor', p_policy -> 'retry_after_cap_factor', 1, 100),
        CASE WHEN jsonb_typeof(p_policy -> 'retry_blocked') <> 'boolean' THEN 'retry_blocked must be a boolean' END);
END;
$$;
COMMENT ON FUNCTION whk.retry_policy_problem(jsonb) IS
    'Why a retry policy is out of bounds (NULL = fine): schedule_s <= 30 delays of 0.001..604800 s, jitter 0..0.99, ...';
