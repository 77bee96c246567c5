-- whk.requeue_in_flight: put in-flight deliveries whose attempt will never be recorded back in the queue,
-- pending and due now (never later than they already were), their lease and batch cleared; one of a
-- webhook deleted meanwhile (whk.delete_webhook) is cancelled instead (nothing would ever claim it again)
-- and moves to the history. The one rule behind whk.reclaim_expired_leases (a dead dispatcher's expired
-- leases) and whk.release_deliveries (a stopping dispatcher's own rows), which choose the rows: p_ids.
-- Rows of p_ids no longer in flight (recorded meanwhile) are left alone. Returns how many were put back or
-- cancelled.
CREATE OR REPLACE FUNCTION whk.requeue_in_flight(p_ids bigint[], p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_now       timestamptz := coalesce(p_now, clock_timestamp());
    v_count     integer;
    v_cancelled bigint[];
BEGIN
    WITH u AS (
        UPDATE whk.delivery_queue d
        SET status = CASE WHEN EXISTS (SELECT 1 FROM whk.whk_01_webhooks w
                                       WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
                          THEN 'cancelled' ELSE 'pending' END,
            lease_until = NULL, claimed_by = NULL, batch_id = NULL,
            next_attempt_at = least(d.next_attempt_at, v_now), updated_at = v_now
        WHERE d.id = ANY (p_ids) AND d.status = 'in_flight'
        RETURNING d.id, d.status
    )
    SELECT count(*)::integer, array_agg(u.id) FILTER (WHERE u.status = 'cancelled') INTO v_count, v_cancelled
    FROM u;
    IF v_cancelled IS NOT NULL THEN
        PERFORM whk.archive_deliveries(v_cancelled, v_now);
    END IF;
    RETURN v_count;
END;
$$;
COMMENT ON FUNCTION whk.requeue_in_flight(bigint[], timestamptz) IS
    'Put in-flight deliveries (p_ids) back to pending, due now; those of a deleted webhook are cancelled into the history.';
