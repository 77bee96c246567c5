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
    v_count integer;
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    -- The expired leases, through the lease index; whk.requeue_in_flight puts them back (or cancels them).
    v_count := whk.requeue_in_flight(ARRAY(SELECT d.id FROM whk.delivery_queue d
                                           WHERE d.status = 'in_flight' AND d.lease_until < v_now), v_now);

    -- A half-open probe whose dispatcher died must not keep the breaker closed to probes forever.
    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until < v_now;
    RETURN v_count;
END;
$$;
