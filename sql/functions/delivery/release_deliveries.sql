-- Graceful shutdown: give back every delivery this dispatcher still holds (pending again, due now, the
-- attempt not counted) so other dispatchers pick them up at once instead of after the lease. Those of a
-- webhook deleted meanwhile (whk.delete_webhook) are cancelled.
CREATE OR REPLACE FUNCTION whk.release_deliveries(p_dispatcher text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count     integer;
    v_cancelled bigint[];
BEGIN
    WITH u AS (
        UPDATE whk.delivery_queue d
        -- A deleted webhook's delivery is cancelled instead: nothing would ever claim it again.
        SET status = CASE WHEN EXISTS (SELECT 1 FROM whk.whk_01_webhooks w
                                       WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
                          THEN 'cancelled' ELSE 'pending' END,
            lease_until = NULL, claimed_by = NULL, batch_id = NULL,
            next_attempt_at = least(d.next_attempt_at, clock_timestamp()), updated_at = clock_timestamp()
        WHERE d.status = 'in_flight' AND d.claimed_by = p_dispatcher
        RETURNING d.id, d.status
    )
    SELECT count(*)::integer, array_agg(u.id) FILTER (WHERE u.status = 'cancelled') INTO v_count, v_cancelled FROM u;
    -- Cancelled is final: those rows move to the history.
    IF v_cancelled IS NOT NULL THEN
        PERFORM whk.archive_deliveries(v_cancelled);
    END IF;

    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM whk.delivery_queue d
                      WHERE d.webhook_id = r.webhook_id AND d.status = 'in_flight');
    RETURN v_count;
END;
$$;
