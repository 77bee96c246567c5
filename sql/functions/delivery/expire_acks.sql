-- Deliveries whose consumer did not confirm (202 then no ack) before ack_deadline are retried, counting
-- the unconfirmed attempt; once the retry schedule is used up they become dead letters instead.
-- The schedule is the one the dispatcher applies (whk.effective_retry_policy).
-- p_now (NULL = clock_timestamp()): tests pass a later moment instead of waiting for a deadline.
CREATE OR REPLACE FUNCTION whk.expire_acks(p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    UPDATE whk.delivery_queue d
    SET status = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN 'dead' ELSE 'pending' END,
        dead_at = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN v_now END,
        dead_reason = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len
                           THEN 'ack timeout after the last attempt' END,
        last_error = 'ack timeout',
        next_attempt_at = v_now, ack_deadline = NULL, updated_at = v_now
    FROM (
        SELECT w.id,
               jsonb_array_length(coalesce(whk.effective_retry_policy(w.retry_policy) -> 'schedule_s',
                                           '[]'::jsonb)) AS schedule_len
        FROM whk.whk_01_webhooks w
    ) x
    WHERE d.status = 'awaiting_ack' AND d.ack_deadline < v_now AND x.id = d.webhook_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
