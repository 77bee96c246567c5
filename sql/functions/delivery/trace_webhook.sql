-- Turn the trace flag of one webhook on for p_seconds (1..86400), or off with 0. While it is on, every
-- dispatcher logs the webhook's requests, responses (credentials masked) and the classifier's decisions
-- at INFO, as WHK_DEBUG does for every webhook: production can be debugged for one webhook without a
-- restart. The dispatchers read the flag with the webhook's settings (cached for ~2 s), so it takes effect
-- within seconds and ends by itself at trace_until. Returns trace_until (NULL when switched off).
CREATE OR REPLACE FUNCTION whk.trace_webhook(p_webhook_id bigint, p_seconds integer)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_until timestamptz;
BEGIN
    IF p_seconds IS NULL OR p_seconds < 0 OR p_seconds > 86400 THEN
        RAISE EXCEPTION 'trace duration % is out of range', coalesce(p_seconds::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass seconds between 1 and 86400 (a day) to trace, or 0 to stop tracing';
    END IF;
    PERFORM 1 FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;
    IF p_seconds > 0 THEN
        v_until := v_now + make_interval(secs => p_seconds);
    END IF;
    INSERT INTO whk.webhook_runtime AS r (webhook_id, trace_set_at, trace_until)
    VALUES (p_webhook_id, CASE WHEN p_seconds > 0 THEN v_now END, v_until)
    ON CONFLICT (webhook_id) DO UPDATE
        SET trace_set_at = excluded.trace_set_at, trace_until = excluded.trace_until;
    RETURN v_until;
END;
$$;
COMMENT ON FUNCTION whk.trace_webhook(bigint, integer) IS
    'Log one webhook''s deliveries in detail for p_seconds (1..86400; 0 stops): WHK_DEBUG for one webhook, no restart.';
