-- One dispatcher round trip: route new outbox events (whk.route_and_take, which may hand fresh deliveries
-- over already in flight) and claim due deliveries
-- (whk.claim_deliveries) in the same transaction, so an event committed a moment ago is routed and
-- claimed by one call (commit -> request in one round trip). Returns the claimed rows, each carrying
-- the number of events routed and `more_due`: whether due deliveries are still waiting after the claim
-- (held back by caps, lanes, rate limits or the caller's free slots). When nothing is due, a freed slot or
-- a recorded outcome cannot make anything claimable, so the dispatcher does not spend a round on it.
-- The last row carries only `routed` and `more_due` (no delivery).
-- p_finished: the caller's deliveries whose request has ended but whose outcome is not recorded yet; the
-- in-flight caps do not count them (whk.claim_deliveries, migration 0022).
CREATE OR REPLACE FUNCTION whk.dispatch_round(p_dispatcher text, p_route_limit integer, p_claim_limit integer,
                                              p_lease_s double precision, p_finished bigint[] DEFAULT '{}')
RETURNS TABLE (routed integer, more_due boolean, delivery_id bigint, webhook_id bigint, event_id uuid,
               event_type text, attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint,
               ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_routed integer := 0;
    v_taken  integer := 0;  -- requests taken: a batch is one
    v_seen   uuid[] := '{}';
    v_more   boolean;
    v_pass   integer;
    v_now    timestamptz;
    t        record;
BEGIN
    -- Fresh deliveries of unconstrained immediate webhooks come back already in flight (whk.route_and_take).
    FOR t IN SELECT * FROM whk.route_and_take(p_route_limit, p_dispatcher, p_claim_limit, p_lease_s, p_finished)
    LOOP
        v_routed := t.routed;
        CONTINUE WHEN t.delivery_id IS NULL;
        IF t.batch_id IS NULL THEN
            v_taken := v_taken + 1;
        ELSIF NOT t.batch_id = ANY (v_seen) THEN
            v_taken := v_taken + 1;
            v_seen := v_seen || t.batch_id;
        END IF;
        routed := t.routed; more_due := NULL; delivery_id := t.delivery_id; webhook_id := t.webhook_id;
        event_id := t.event_id; event_type := t.event_type; attempts := t.attempts;
        schedule_offset := t.schedule_offset; batch_id := t.batch_id; commit_seq := t.commit_seq;
        ordering_key := t.ordering_key; payload := t.payload;
        RETURN NEXT;
    END LOOP;

    -- The claim only when due work exists (one probe of each active, unquarantined webhook's due index, the
    -- claim's own index): in the steady state route_and_take has taken every fresh delivery and the claim, a statement
    -- of its own, would find nothing. After a claim the probe runs again for `more_due`.
    FOR v_pass IN 1 .. 2 LOOP
        -- The moment as a parameter: an index bound of the probe (clock_timestamp() in the statement is
        -- volatile, so it was only a filter, and the probe read every not-yet-due delivery of the webhook).
        v_now := clock_timestamp();
        SELECT EXISTS (
            SELECT 1 FROM whk.whk_01_webhooks wh
            WHERE wh.status = 'active' AND wh.deleted_at IS NULL AND wh.quarantined_at IS NULL
              AND wh.needs_secret_since IS NULL
              -- OFFSET 0: a probe per webhook, never a semi-join over every due delivery (whk.claim_deliveries),
              -- newest due first (the reason is at whk.claim_deliveries).
              AND EXISTS (SELECT 1 FROM whk.delivery_queue d
                          WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                          ORDER BY d.next_attempt_at DESC
                          OFFSET 0)
              -- A suspended or disabled consumer's due deliveries wait for it, not for a round (the claim
              -- skips them): counted here they would make every round ask for another at once.
              -- Likewise a consumer's non-urgent deliveries inside its quiet hours.
              AND EXISTS (SELECT 1 FROM whk.whk_04_assinantes a
                          WHERE a.id = wh.consumer_id AND a.status = 'active'
                            AND whk.quiet_hold_until(a.quiet_hours, wh.urgent, v_now) IS NULL))
        INTO v_more;
        EXIT WHEN NOT v_more OR v_pass = 2;
        RETURN QUERY
        SELECT v_routed, NULL::boolean, c.delivery_id, c.webhook_id, c.event_id, c.event_type, c.attempts,
               c.schedule_offset, c.batch_id, c.commit_seq, c.ordering_key, c.payload
        FROM whk.claim_deliveries(p_dispatcher, p_claim_limit - v_taken, p_lease_s, p_finished) c;
    END LOOP;
    -- The flag travels on its own row (no delivery): a client reads it from the row without delivery_id.
    RETURN QUERY SELECT v_routed, v_more, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                        NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
END;
$$;
