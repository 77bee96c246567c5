-- Why an alert's condition or escalation (whk_06_alertas) is refused, or NULL when they are fine. The bounds
-- are the API's (api/monitoring/schemas.py): threshold 0..1e12, window_s 60..604800 s, webhook_id a positive
-- bigint, every escalation step's after_s 60..604800 s. The alert queries (api/monitoring) read these numbers into
-- interval and comparison arithmetic, so SQL-written alerts are held to the same bounds.
CREATE OR REPLACE FUNCTION whk.alert_settings_problem(p_condition jsonb, p_escalation jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    RETURN coalesce(
        CASE WHEN jsonb_typeof(p_condition) = 'object' THEN coalesce(
            whk.setting_number_problem('condition.threshold', p_condition -> 'threshold', 0, 1e12),
            whk.setting_number_problem('condition.window_s', p_condition -> 'window_s', 60, 604800, true),
            whk.setting_number_problem('condition.webhook_id', p_condition -> 'webhook_id', 1, 9223372036854775807,
                                       true, true)) END,
        CASE WHEN jsonb_typeof(p_escalation) = 'array' THEN
            (SELECT s.problem
             FROM (SELECT CASE WHEN jsonb_typeof(e.v) <> 'object' THEN format('escalation[%s] must be an object', e.i - 1)
                               ELSE whk.setting_number_problem(format('escalation[%s].after_s', e.i - 1), e.v -> 'after_s',
                                                               60, 604800, true) END AS problem, e.i
                   FROM jsonb_array_elements(p_escalation) WITH ORDINALITY AS e (v, i)) s
             WHERE s.problem IS NOT NULL
             ORDER BY s.i LIMIT 1) END);
END;
$$;
COMMENT ON FUNCTION whk.alert_settings_problem(jsonb, jsonb) IS
    'Why an alert''s condition or escalation numbers are out of bounds (NULL = fine).';
