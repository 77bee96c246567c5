-- Deliveries whose consumer did not confirm (202 then no ack) before ack_deadline are retried, counting
-- the unconfirmed attempt; once the retry schedule is used up they become dead letters instead.
-- The schedule is the one the dispatcher applies (whk.effective_retry_policy).
CREATE OR REPLACE FUNCTION whk.expire_acks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN 'dead' ELSE 'pending' END,
        dead_at = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN clock_timestamp() END,
        dead_reason = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len
                           THEN 'ack timeout after the last attempt' END,
        last_error = 'ack timeout',
        next_attempt_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    FROM (
        SELECT w.id,
               jsonb_array_length(coalesce(whk.effective_retry_policy(w.retry_policy) -> 'schedule_s',
                                           '[]'::jsonb)) AS schedule_len
        FROM whk.whk_01_webhooks w
    ) x
    WHERE d.status = 'awaiting_ack' AND d.ack_deadline < clock_timestamp() AND x.id = d.webhook_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
