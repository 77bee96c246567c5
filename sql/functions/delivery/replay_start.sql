-- whk.replay_start: record a replay of the webhook's past events and queue its job (pgqueuer entrypoint
-- `replay`, run by the job worker). Refused when the range reaches before the outbox retention horizon
-- (whk.retention_horizon('outbox')): those events may be gone, and a replay that silently sends part of
-- what was asked is worse than none; the error's DETAIL names the horizon. total is counted now; events
-- routed later inside the range are still sent (the job works until it finds no more). SECURITY DEFINER
-- only to queue the job: the callers' roles have no rights on pgqueuer's table. Tenancy is the caller's
-- business (the API checks the webhook is the caller's own). Returns the replay's id.
CREATE OR REPLACE FUNCTION whk.replay_start(p_webhook_id bigint, p_since timestamptz, p_until timestamptz,
                                            p_types text[], p_predicate jsonpath, p_created_by text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_horizon  timestamptz := whk.retention_horizon('outbox');
    v_consumer bigint;
    v_id       bigint;
BEGIN
    SELECT w.consumer_id INTO v_consumer FROM whk.whk_01_webhooks w
     WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % not found', p_webhook_id
            USING ERRCODE = 'no_data_found', HINT = 'replay to an existing, not deleted webhook';
    END IF;
    IF p_since IS NULL OR p_until IS NULL OR p_since >= p_until THEN
        RAISE EXCEPTION 'empty replay range [%, %)', p_since, p_until
            USING ERRCODE = 'invalid_parameter_value', HINT = 'since must be before until';
    END IF;
    IF p_since < v_horizon THEN
        RAISE EXCEPTION 'replay range starts before the outbox retention horizon %', v_horizon
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'horizon=' || v_horizon,
                  HINT = 'since must be at or after the horizon (retention.outbox_days)';
    END IF;
    INSERT INTO whk.replays (webhook_id, consumer_id, since, until, event_types, predicate, total, created_by)
    VALUES (p_webhook_id, v_consumer, p_since, p_until, coalesce(p_types, '{}'), p_predicate,
            (SELECT count(*) FROM whk.replay_events(p_webhook_id, p_since, p_until, coalesce(p_types, '{}'),
                                                    p_predicate)),
            p_created_by)
    RETURNING id INTO v_id;
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status)
    VALUES (0, 'replay', convert_to(v_id::text, 'UTF8'), 'queued');
    RETURN v_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.replay_start(bigint, timestamptz, timestamptz, text[], jsonpath, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.replay_start(bigint, timestamptz, timestamptz, text[], jsonpath, text)
    TO whk_app, whk_dispatcher;
COMMENT ON FUNCTION whk.replay_start(bigint, timestamptz, timestamptz, text[], jsonpath, text) IS
    'Record a replay (refused before the outbox retention horizon) and queue its job; returns its id.';
