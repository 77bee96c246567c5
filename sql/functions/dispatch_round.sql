-- One dispatcher round trip: route new outbox events (whk.route_outbox) and claim due deliveries
-- (whk.claim_deliveries) in the same transaction, so an event committed a moment ago is routed and
-- claimed by one call (commit -> request in one round trip). Returns the claimed rows, each carrying
-- the number of events routed; when nothing was claimed, one row with only `routed` set.
CREATE OR REPLACE FUNCTION whk.dispatch_round(p_dispatcher text, p_route_limit integer, p_claim_limit integer,
                                              p_lease_s double precision)
RETURNS TABLE (routed integer, delivery_id bigint, webhook_id bigint, event_id uuid, event_type text,
               attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text,
               payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_routed integer := whk.route_outbox(p_route_limit);
    v_claimed bigint;
BEGIN
    RETURN QUERY
    SELECT v_routed, c.delivery_id, c.webhook_id, c.event_id, c.event_type, c.attempts, c.schedule_offset,
           c.batch_id, c.commit_seq, c.ordering_key, c.payload
    FROM whk.claim_deliveries(p_dispatcher, p_claim_limit, p_lease_s) c;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;
    IF v_claimed = 0 THEN
        RETURN QUERY SELECT v_routed, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                            NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
    END IF;
END;
$$;
