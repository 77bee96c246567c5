-- Graceful shutdown: give back every delivery this dispatcher still holds (pending again, due now, the
-- attempt not counted) so other dispatchers pick them up at once instead of after the lease. Those of a
-- webhook deleted meanwhile (whk.delete_webhook) are cancelled.
CREATE OR REPLACE FUNCTION whk.release_deliveries(p_dispatcher text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    v_count := whk.requeue_in_flight(ARRAY(SELECT d.id FROM whk.delivery_queue d
                                           WHERE d.status = 'in_flight' AND d.claimed_by = p_dispatcher));

    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM whk.delivery_queue d
                      WHERE d.webhook_id = r.webhook_id AND d.status = 'in_flight');
    RETURN v_count;
END;
$$;
