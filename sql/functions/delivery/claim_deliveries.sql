-- Claim due deliveries for one dispatcher, fairly across webhooks, honouring every shared limit.
--
-- p_limit is the number of HTTP requests the caller can start now (a batch is one request). Webhooks with
-- due work are visited least-recently-served first; for each one the claim walks ITS OWN due index
-- (webhook_id, next_attempt_at, id) WHERE pending, so one endpoint's backlog of millions never delays
-- another endpoint's fresh event (a global FIFO would). The webhook's runtime row is locked SKIP LOCKED:
-- two dispatchers never claim for the same webhook at the same moment, so token buckets, in-flight caps
-- and half-open probes are exact across processes.
--
-- Per webhook the number of requests is the least of: what is left of p_limit, max_in_flight minus the
-- requests already in flight, the webhook's token bucket, the consumer's token bucket and daily quota,
-- and 1 for a half-open breaker (the probe). An open breaker claims nothing, so its deliveries wait
-- (they are not dead-lettered early).
--
-- Modes: immediate and delayed take due rows in (next_attempt_at, id) order; ordered takes only lane heads
-- (the lowest commit_seq of each key not yet delivered, dead or parked), so a retrying head blocks its own
-- key and nothing else; batch waits until batch_size rows are due or the oldest has waited batch_window_ms,
-- then claims up to batch_size rows under one batch_id.
--
-- Claimed rows become in_flight with a lease; an expired lease is reclaimed by whk.reclaim_expired_leases.
--
-- whk.route_and_take applies the same admission rules to fresh deliveries (and leaves to this claim what
-- needs its state: buckets, quotas, probes, lanes, partial batches); tests/db/test_admission_rules.py is
-- one table of cases that both functions answer.
--
-- p_finished (migration 0022): deliveries of p_dispatcher whose request has ended but whose outcome is not
-- recorded yet (the dispatcher writes outcomes in groups). They are still in_flight here, but no longer on
-- the wire, so the in-flight cap does not count them: max_in_flight limits concurrent requests, not the
-- bookkeeping behind them. (Measured before: a webhook at the default max_in_flight of 10 drained at ~600
-- events/s, its requests waiting for earlier outcomes to be written.) The dispatcher lists only SUCCESSFUL
-- requests: after a failure the webhook waits for it to be written, so the breaker and the failure streak
-- always see it before the next request. Lanes stay blocked until the outcome is recorded: a retry must
-- not be overtaken.
--
-- Only active webhooks of active consumers are served: a paused webhook's or a suspended consumer's
-- deliveries wait, pending; a disabled one's are parked (whk.disable_webhook, whk.set_consumer_status).
-- Inside the consumer's quiet hours (whk.quiet_hold_until) only its urgent webhooks are served: the others'
-- deliveries wait, pending, spending no attempt, and are due again when the window ends (whk.next_wakeup).
--
-- Quarantined webhooks (whk_01_webhooks.quarantined_at, see whk.quarantine_webhook) are never claimed for:
-- one webhook whose data breaks this statement must not stop it for everyone. p_only (NULL = every webhook)
-- restricts the claim to those webhooks: whk.isolate_round_faults probes with it to find the culprit of a
-- failed round; the dispatcher's rounds never pass it.
-- p_now (NULL = clock_timestamp()): the moment the claim judges due times, leases, probes and buckets
-- by. Tests pass a later one instead of sleeping until something is due; the dispatcher never passes it.
CREATE OR REPLACE FUNCTION whk.claim_deliveries(p_dispatcher text, p_limit integer, p_lease_s double precision,
                                                p_finished bigint[] DEFAULT '{}', p_only bigint[] DEFAULT NULL,
                                                p_now timestamptz DEFAULT NULL)
RETURNS TABLE (delivery_id bigint, webhook_id bigint, event_id uuid, event_type text, attempts integer,
               schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz := coalesce(p_now, clock_timestamp());
    v_lease      timestamptz := v_now + make_interval(secs => p_lease_s);
    v_left       integer := p_limit;
    v_defaults   jsonb := coalesce(whk.delivery_config('rate_limit.webhook_default'), '{}'::jsonb);
    w            record;
    c            record;
    v_req        integer;
    v_in_flight  integer;
    v_num        numeric;
    v_rate       double precision;
    v_burst      double precision;
    v_tokens     double precision;
    v_ctokens    double precision;
    v_ids        bigint[];
    v_requests   integer;
    v_batch      uuid;
    v_due        integer;
    v_oldest     timestamptz;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;

    FOR w IN
        SELECT wh.id, wh.consumer_id, wh.delivery_mode, wh.batch_size, wh.batch_window_ms, wh.max_in_flight,
               wh.rate_limit_per_second, wh.rate_limit_burst, wh.urgent,
               r.breaker_state, r.probe_at, r.probe_until, r.tokens, r.tokens_at
        FROM whk.whk_01_webhooks wh
        JOIN whk.webhook_runtime r ON r.webhook_id = wh.id
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL AND wh.quarantined_at IS NULL
          -- Never unsigned: a webhook waiting for its signing secret keeps its deliveries pending.
          AND wh.needs_secret_since IS NULL
          AND (p_only IS NULL OR wh.id = ANY (p_only))
          -- One probe of the webhook's due index. OFFSET 0 keeps the EXISTS a per-webhook probe: flattened
          -- into a semi-join, the generic plan read every due delivery of every webhook and grouped them by
          -- webhook (measured in a 20,000-event drain: ~3 ms per claim, growing with the backlog).
          -- Newest due first (a backward scan from v_now): the index entries of the deliveries claimed since
          -- the last VACUUM are dead and sit at the OLD end, so a forward probe stepped over all of them
          -- (measured with 21,000 claimed: 108 pages read per probe, 7 backward) before the first one due.
          AND EXISTS (SELECT 1 FROM whk.delivery_queue d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                      ORDER BY d.next_attempt_at DESC
                      OFFSET 0)
        ORDER BY r.last_claim_at NULLS FIRST, wh.id
        FOR UPDATE OF r SKIP LOCKED
    LOOP
        EXIT WHEN v_left <= 0;

        -- The consumer's row (its status here, its token bucket and quota below). A suspended or disabled
        -- consumer is served nothing: its deliveries wait, pending (or parked by whk.set_consumer_status),
        -- until it is active again. Read first, so such a webhook costs one primary-key read per claim.
        SELECT a.status,
               CASE WHEN a.rate_limit_per_second IS NOT NULL
                    THEN least(greatest(a.rate_limit_per_second, 0.001), 1000000)::double precision END AS rate,
               a.rate_limit_burst::double precision AS burst,
               a.quota_deliveries_per_day AS quota, cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used,
               a.quiet_hours
        INTO c
        FROM whk.whk_04_assinantes a
        LEFT JOIN whk.consumer_runtime cr ON cr.consumer_id = a.id
        WHERE a.id = w.consumer_id;
        CONTINUE WHEN c.status <> 'active';
        CONTINUE WHEN whk.quiet_hold_until(c.quiet_hours, w.urgent, v_now) IS NOT NULL;

        -- Circuit breaker: open = nothing until probe_at, then exactly one probe (half-open).
        v_req := v_left;
        IF w.breaker_state = 'open' THEN
            CONTINUE WHEN w.probe_at > v_now;
            v_req := 1;
        ELSIF w.breaker_state = 'half_open' THEN
            CONTINUE WHEN w.probe_until > v_now;
            v_req := 1;
        END IF;

        -- In-flight cap, counted in requests (a batch in flight is one request), less the caller's finished
        -- ones (p_finished), found by primary key. (Until migration 0024 each in-flight row was compared with
        -- the whole array, `d.id <> ALL (p_finished)`: a parameter array is not hashed, so in-flight x
        -- finished comparisons; a claim with 1,000 in flight and 500 finished took 4.6 ms, now 3.1.) A
        -- batch's members finish together (one request), so the finished batches subtract exactly.
        SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
        INTO v_in_flight
        FROM whk.delivery_queue d
        WHERE d.webhook_id = w.id AND d.status = 'in_flight';
        -- The finished ones only matter when the cap binds: with room for every request left, the count of
        -- them (a statement per claim) cannot change v_req.
        IF cardinality(p_finished) > 0 AND w.max_in_flight - v_in_flight < v_req THEN
            SELECT v_in_flight - CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
            INTO v_in_flight
            FROM whk.delivery_queue d
            WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id AND d.status = 'in_flight'
              AND d.claimed_by = p_dispatcher;
        END IF;
        v_req := least(v_req, greatest(w.max_in_flight - v_in_flight, 0));
        CONTINUE WHEN v_req <= 0;

        -- Webhook token bucket (requests per second; burst defaults to one second's worth). The rate is
        -- clamped to its documented bounds (the CHECKs hold them too) while still numeric: a denormal rate
        -- does not even cast to double precision, and would underflow the bucket arithmetic if it did.
        v_num := coalesce(w.rate_limit_per_second, (v_defaults ->> 'per_second')::numeric);
        v_rate := CASE WHEN v_num IS NOT NULL THEN least(greatest(v_num, 0.001), 1000000)::double precision END;
        IF v_rate IS NOT NULL THEN
            v_burst := coalesce(w.rate_limit_burst::double precision, (v_defaults ->> 'burst')::double precision,
                                greatest(1.0, ceil(v_rate)));
            v_tokens := least(v_burst, coalesce(w.tokens, v_burst)
                                       + v_rate * greatest(extract(epoch FROM v_now - w.tokens_at), 0));
            v_req := least(v_req, floor(v_tokens)::integer);
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Consumer token bucket and daily quota, shared by all of the consumer's webhooks (its row was read
        -- at the top of the loop).
        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            INSERT INTO whk.consumer_runtime (consumer_id) VALUES (w.consumer_id)
            ON CONFLICT (consumer_id) DO NOTHING;
            SELECT cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
            INTO c.tokens, c.tokens_at, c.quota_day, c.quota_used
            FROM whk.consumer_runtime cr WHERE cr.consumer_id = w.consumer_id
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;  -- another dispatcher is charging this consumer right now
            IF c.rate IS NOT NULL THEN
                v_ctokens := least(coalesce(c.burst, greatest(1.0, ceil(c.rate))),
                                   coalesce(c.tokens, coalesce(c.burst, greatest(1.0, ceil(c.rate))))
                                   + c.rate * greatest(extract(epoch FROM v_now - c.tokens_at), 0));
                v_req := least(v_req, floor(v_ctokens)::integer);
            END IF;
            IF c.quota IS NOT NULL THEN
                -- least() in bigint before the cast: a quota above 2^31 must not overflow integer.
                v_req := least(v_req, greatest(c.quota - CASE WHEN c.quota_day = v_now::date
                                                              THEN c.quota_used ELSE 0 END, 0))::integer;
            END IF;
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Pick the rows (mode by mode), then claim them with one statement shared by every mode.
        v_batch := NULL;
        IF w.delivery_mode = 'batch' THEN
            SELECT count(*), min(s.next_attempt_at) INTO v_due, v_oldest
            FROM (SELECT d.next_attempt_at FROM whk.delivery_queue d
                  WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                  ORDER BY d.next_attempt_at, d.id
                  LIMIT w.batch_size) s;
            CONTINUE WHEN v_due < w.batch_size
                      AND v_oldest > v_now - make_interval(secs => w.batch_window_ms / 1000.0);
            v_batch := gen_random_uuid();
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.delivery_queue d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT w.batch_size
                FOR UPDATE SKIP LOCKED) p;
        ELSIF w.delivery_mode = 'ordered' THEN
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.delivery_queue d
                JOIN (SELECT DISTINCT ON (x.ordering_key) x.id, x.status, x.next_attempt_at
                      FROM whk.delivery_queue x
                      WHERE x.webhook_id = w.id AND x.status IN ('pending', 'in_flight', 'awaiting_ack')
                        AND x.ordering_key IS NOT NULL
                      ORDER BY x.ordering_key, x.commit_seq, x.id) h ON h.id = d.id
                WHERE h.status = 'pending' AND h.next_attempt_at <= v_now AND d.status = 'pending'
                ORDER BY h.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE OF d SKIP LOCKED) p;
        ELSE
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.delivery_queue d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE SKIP LOCKED) p;
        END IF;
        CONTINUE WHEN v_ids IS NULL;

        RETURN QUERY
        WITH claimed AS (
            UPDATE whk.delivery_queue d
            SET status = 'in_flight', lease_until = v_lease, claimed_by = p_dispatcher, batch_id = v_batch,
                updated_at = v_now
            WHERE d.id = ANY (v_ids)
            RETURNING d.*
        )
        SELECT k.id, k.webhook_id, k.event_id, k.event_type, k.attempts, k.schedule_offset, k.batch_id,
               k.commit_seq, k.ordering_key, coalesce(k.payload, whk.event_envelope(o))::text  -- rendered for a pinned major
        FROM claimed k
        -- LEFT: a dead letter retried after retention dropped its event's partition sends its own copy.
        LEFT JOIN whk.outbox o ON o.id = k.outbox_id AND o.created_at = k.event_created_at;
        v_requests := CASE WHEN v_batch IS NOT NULL THEN 1 ELSE cardinality(v_ids) END;
        CONTINUE WHEN v_requests = 0;
        v_left := v_left - v_requests;

        UPDATE whk.webhook_runtime r
        SET last_claim_at = v_now,
            tokens = CASE WHEN v_rate IS NULL THEN NULL ELSE v_tokens - v_requests END,
            tokens_at = v_now,
            breaker_state = CASE WHEN r.breaker_state = 'open' THEN 'half_open' ELSE r.breaker_state END,
            probe_until = CASE WHEN r.breaker_state IN ('open', 'half_open') THEN v_lease ELSE r.probe_until END
        WHERE r.webhook_id = w.id;

        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            UPDATE whk.consumer_runtime cr
            SET tokens = CASE WHEN c.rate IS NULL THEN NULL ELSE v_ctokens - v_requests END,
                tokens_at = v_now,
                quota_used = CASE WHEN cr.quota_day = v_now::date THEN cr.quota_used ELSE 0 END + v_requests,
                quota_day = v_now::date
            WHERE cr.consumer_id = w.consumer_id;
        END IF;
    END LOOP;
END;
$$;
