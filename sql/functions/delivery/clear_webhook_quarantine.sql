-- Lift a webhook's quarantine (whk.quarantine_webhook) once its data is fixed: the dispatcher claims for it
-- again, and its deliveries that waited pending are due at once (same event_id, so the same webhook-id;
-- their retry schedule restarts: a quarantine is not the endpoint's failure). If the cause is still there,
-- the next round quarantines it again. Status, breaker and parked deliveries are not touched.
-- The API audits the operator's request itself (POST /api/whk/webhooks/{id}/clear-quarantine).
-- Returns false when the webhook was not quarantined.
CREATE OR REPLACE FUNCTION whk.clear_webhook_quarantine(p_webhook_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET quarantined_at = NULL, quarantine_stage = NULL, quarantine_reason = NULL, quarantine_sqlstate = NULL,
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.quarantined_at IS NOT NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE whk.delivery_queue d
    SET next_attempt_at = clock_timestamp(), schedule_offset = d.attempts, updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    -- Time in quarantine is no failure of the endpoint: an unbroken failure streak restarts its
    -- auto-disable window now (whk.auto_disable_webhooks skips quarantined webhooks meanwhile).
    UPDATE whk.webhook_runtime r
    SET failing_since = clock_timestamp()
    WHERE r.webhook_id = p_webhook_id AND r.failing_since IS NOT NULL;
    PERFORM whk.wake_dispatchers();
    RETURN true;
END;
$$;
