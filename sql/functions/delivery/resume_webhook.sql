-- Re-enable a disabled or paused webhook: its parked deliveries become pending again (same event_id, so
-- the same webhook-id header), its breaker closes, its failure streak restarts and a quarantine
-- (whk.quarantine_webhook) is lifted: resuming says "deliver again".
-- Returns the number of deliveries released from the parking lot (not those waiting for a transform).
CREATE OR REPLACE FUNCTION whk.resume_webhook(p_webhook_id bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_released integer;
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET status = 'active', disabled_reason = NULL, disabled_at = NULL, quarantined_at = NULL,
        quarantine_stage = NULL, quarantine_reason = NULL, quarantine_sqlstate = NULL,
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;

    UPDATE whk.webhook_runtime r
    SET breaker_state = 'closed', consecutive_failures = 0, opened_at = NULL, probe_at = NULL,
        probe_until = NULL, failing_since = NULL
    WHERE r.webhook_id = p_webhook_id;

    UPDATE whk.delivery_queue d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'parked'
      -- Not those parked for a transform: sent now they would carry the wrong major
      -- (whk.render_parked_deliveries releases them).
      AND d.render_problem IS NULL;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;
COMMENT ON FUNCTION whk.resume_webhook(bigint) IS
    'Resume a paused, disabled or quarantined webhook: parked deliveries are released (returns how many).';
