-- whk.reopen_deliveries: bring delivered deliveries among p_ids back from the history into the live
-- queue, unchanged (same id, same event_id, so the same webhook-id header), for a manual retry, a bulk
-- retry or a replay (whk.retry_deliveries, which sets them pending next). The only statement that deletes
-- single rows from whk.delivery_history: an operator's retry of a few deliveries, never a mass delete.
-- Only deliveries a retry may send again come back (whk.can_send_again).
-- Returns how many came back.
CREATE OR REPLACE FUNCTION whk.reopen_deliveries(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_n integer;
BEGIN
    WITH back AS (
        DELETE FROM whk.delivery_history h
         WHERE h.id = ANY (p_ids) AND h.status = 'delivered'
           AND whk.can_send_again(h.webhook_id, h.payload, h.outbox_id, h.event_created_at)
        RETURNING h.*
    )
    INSERT INTO whk.delivery_queue
    OVERRIDING SYSTEM VALUE
    SELECT b.id, b.event_id, b.outbox_id, b.event_created_at, b.event_type, b.webhook_id, b.consumer_id, b.status,
           b.ordering_key, b.commit_seq, b.attempts, b.schedule_offset, b.attempt_ids, b.next_attempt_at,
           b.lease_until, b.claimed_by, b.batch_id, b.last_status_code, b.last_error, b.last_attempt_at,
           b.delivered_at, b.ack_deadline, b.acked_at, b.dead_at, b.dead_reason, b.superseded_by, b.payload,
           b.render_problem, b.created_at, b.updated_at
    FROM back b;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.reopen_deliveries(bigint[]) IS
    'Move delivered deliveries among p_ids from the history back to the live queue (for a retry); returns how many.';
