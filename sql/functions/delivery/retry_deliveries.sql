-- Manual / bulk retry: put finished or failed deliveries back in the queue now, with a fresh retry
-- schedule (schedule_offset = attempts so far) but the SAME event_id, hence the same webhook-id header:
-- receivers deduplicate replays. The signature is fresh because it is computed per attempt.
-- Rows in flight are left alone (their attempt is running), and so are deliveries a retry may not send
-- again (whk.can_send_again: of a deleted webhook, or with no body left) and rows parked for a missing or
-- failing transform (their body for the pinned major does not exist yet: whk.render_parked_deliveries releases
-- them). Delivered deliveries come back from the history first (whk.reopen_deliveries), same id.
-- Returns how many were re-queued; the API reports the others as skipped.
CREATE OR REPLACE FUNCTION whk.retry_deliveries(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM whk.reopen_deliveries(p_ids);
    UPDATE whk.delivery_queue d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        dead_at = NULL, dead_reason = NULL, ack_deadline = NULL, lease_until = NULL, claimed_by = NULL,
        batch_id = NULL, updated_at = clock_timestamp()
    WHERE d.id = ANY (p_ids) AND d.status IN ('dead', 'delivered', 'awaiting_ack', 'pending', 'parked')
      AND d.render_problem IS NULL
      AND whk.can_send_again(d.webhook_id, d.payload, d.outbox_id, d.event_created_at);
    GET DIAGNOSTICS v_count = ROW_COUNT;

    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT DISTINCT d.webhook_id FROM whk.delivery_queue d WHERE d.id = ANY (p_ids)
    ON CONFLICT (webhook_id) DO NOTHING;
    RETURN v_count;
END;
$$;
