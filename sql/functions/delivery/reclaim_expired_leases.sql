-- Deliveries whose dispatcher died (kill -9, lost host) stay in_flight until their lease passes; then any
-- dispatcher puts them back to pending, due now. The attempt that may have been on the wire is not
-- counted (its outcome was never recorded), so a receiver can see it twice: at-least-once, with the same
-- webhook-id and byte-identical body. The lease is at least 3x the attempt deadline (checked at start-up),
-- so a live dispatcher's attempt always ends, recorded, before its lease could expire. Those of a webhook
-- deleted meanwhile (whk.delete_webhook) are cancelled.
-- p_now (NULL = clock_timestamp()): tests pass a later moment instead of waiting for a lease to pass.
CREATE OR REPLACE FUNCTION whk.reclaim_expired_leases(p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count     integer;
    v_cancelled bigint[];
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    WITH u AS (
        UPDATE whk.delivery_queue d
        -- A deleted webhook's delivery is cancelled instead: nothing would ever claim it again.
        SET status = CASE WHEN EXISTS (SELECT 1 FROM whk.whk_01_webhooks w
                                       WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
                          THEN 'cancelled' ELSE 'pending' END,
            lease_until = NULL, claimed_by = NULL, batch_id = NULL,
            next_attempt_at = least(d.next_attempt_at, v_now), updated_at = v_now
        WHERE d.status = 'in_flight' AND d.lease_until < v_now
        RETURNING d.id, d.status
    )
    SELECT count(*)::integer, array_agg(u.id) FILTER (WHERE u.status = 'cancelled') INTO v_count, v_cancelled FROM u;
    -- Cancelled is final: those rows move to the history.
    IF v_cancelled IS NOT NULL THEN
        PERFORM whk.archive_deliveries(v_cancelled);
    END IF;

    -- A half-open probe whose dispatcher died must not keep the breaker closed to probes forever.
    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until < v_now;
    RETURN v_count;
END;
$$;
