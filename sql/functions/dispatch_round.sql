-- One dispatcher round trip: route new outbox events (whk.route_outbox) and claim due deliveries
-- (whk.claim_deliveries) in the same transaction, so an event committed a moment ago is routed and
-- claimed by one call (commit -> request in one round trip). Returns the claimed rows, each carrying
-- the number of events routed and `more_due`: whether due deliveries are still waiting after the claim
-- (held back by caps, lanes, rate limits or the caller's free slots). When nothing is due, a freed slot or
-- a recorded outcome cannot make anything claimable, so the dispatcher does not spend a round on it.
-- When nothing was claimed, one row with only `routed` and `more_due` set.
CREATE OR REPLACE FUNCTION whk.dispatch_round(p_dispatcher text, p_route_limit integer, p_claim_limit integer,
                                              p_lease_s double precision)
RETURNS TABLE (routed integer, more_due boolean, delivery_id bigint, webhook_id bigint, event_id uuid,
               event_type text, attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint,
               ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_routed integer := whk.route_outbox(p_route_limit);
    v_more   boolean;
BEGIN
    RETURN QUERY
    SELECT v_routed, NULL::boolean, c.delivery_id, c.webhook_id, c.event_id, c.event_type, c.attempts,
           c.schedule_offset, c.batch_id, c.commit_seq, c.ordering_key, c.payload
    FROM whk.claim_deliveries(p_dispatcher, p_claim_limit, p_lease_s) c;
    -- One probe of each active webhook's due index (the claim's own index).
    SELECT EXISTS (
        SELECT 1 FROM whk.whk_01_webhooks wh
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()))
    INTO v_more;
    -- The flag travels on its own row (first column set, no delivery): a client reads it from any row.
    RETURN QUERY SELECT v_routed, v_more, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                        NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
END;
$$;
