-- 0026 fault_isolation: one webhook's bad data or refused endpoint quarantines that webhook instead of stopping the dispatcher.
-- Why: a set-based delivery statement (routing, the claim, recording outcomes) that raised for one webhook's
-- row (a rate_limit_per_second of 5e-324 underflowed in the claim's token bucket) failed the whole round, and
-- the dispatcher exited; the row survived, so it died again on restart. Webhooks gain a quarantine
-- (quarantined_at, quarantine_stage, quarantine_sqlstate, quarantine_reason), skipped by the claim and, for a
-- routing fault, by routing; whk.isolate_round_faults finds the culprit of a failed round by bisection
-- (whk.fault_probe, rolled back) and quarantines it, only after a failure. whk.claim_deliveries and
-- whk.route_and_take gain p_only (probes restrict them to some webhooks; NULL in every round). An SSRF
-- refusal quarantines the webhook (stage 'ssrf') instead of burning the retry schedule. Dispatchers record
-- their SSRF policy and a failing round's error in whk.dispatchers (health compares and shows them).
-- The functions that gain a parameter (with a default, so existing calls keep working) are dropped first.
BEGIN;
SELECT whk.migration_begin(26, 'fault_isolation');

-- Fault isolation (docs/delivery.md, "Quarantine"). A webhook whose data makes a shared delivery statement
-- fail (routing, the claim, recording outcomes), or whose endpoint the SSRF guard refuses, is quarantined
-- (whk.quarantine_webhook): the dispatcher stops claiming for it, and for a routing fault stops routing to
-- it, so the set-based statements keep serving every other webhook. Orthogonal to status
-- (active/paused/disabled) and to the breaker: clearing it (whk.clear_webhook_quarantine, or a resume) puts
-- the webhook back where it was.
ALTER TABLE whk.whk_01_webhooks
    ADD COLUMN quarantined_at      timestamptz,
    ADD COLUMN quarantine_stage    text CHECK (quarantine_stage IN ('route', 'claim', 'record', 'ssrf')),
    ADD COLUMN quarantine_sqlstate text CHECK (quarantine_sqlstate ~ '^[0-9A-Z]{5}$'),
    ADD COLUMN quarantine_reason   text CHECK (length(quarantine_reason) <= 2000),
    ADD CONSTRAINT whk_01_webhooks_quarantine_stage_set CHECK ((quarantined_at IS NULL) = (quarantine_stage IS NULL));
COMMENT ON COLUMN whk.whk_01_webhooks.quarantined_at IS
    'Set when the webhook''s data broke a delivery statement or the SSRF guard refused it; the dispatcher skips it.';
-- Health lists the quarantined webhooks on every call: a tiny partial index.
CREATE INDEX whk_01_webhooks_quarantined_idx ON whk.whk_01_webhooks (id) WHERE quarantined_at IS NOT NULL;

-- What each dispatcher enforces and whether its rounds are failing (whk.dispatcher_heartbeat): health shows
-- dispatchers whose SSRF policy differs from their peers', and errors they cannot quarantine away.
ALTER TABLE whk.dispatchers
    ADD COLUMN ssrf_policy   text,
    ADD COLUMN ssrf_exempt   text[],
    ADD COLUMN last_error    text,
    ADD COLUMN last_error_at timestamptz;

DROP FUNCTION whk.claim_deliveries(text, integer, double precision, bigint[]);
DROP FUNCTION whk.route_and_take(integer, text, integer, double precision, bigint[]);
DROP FUNCTION whk.dispatcher_heartbeat(text, text, integer, text, boolean, double precision);

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
-- p_finished (migration 0022): deliveries of p_dispatcher whose request has ended but whose outcome is not
-- recorded yet (the dispatcher writes outcomes in groups). They are still in_flight here, but no longer on
-- the wire, so the in-flight cap does not count them: max_in_flight limits concurrent requests, not the
-- bookkeeping behind them. (Measured before: a webhook at the default max_in_flight of 10 drained at ~600
-- events/s, its requests waiting for earlier outcomes to be written.) The dispatcher lists only SUCCESSFUL
-- requests: after a failure the webhook waits for it to be written, so the breaker and the failure streak
-- always see it before the next request. Lanes stay blocked until the outcome is recorded: a retry must
-- not be overtaken.
--
-- Quarantined webhooks (whk_01_webhooks.quarantined_at, see whk.quarantine_webhook) are never claimed for:
-- one webhook whose data breaks this statement must not stop it for everyone. p_only (NULL = every webhook)
-- restricts the claim to those webhooks: whk.isolate_round_faults probes with it to find the culprit of a
-- failed round; the dispatcher's rounds never pass it.
CREATE OR REPLACE FUNCTION whk.claim_deliveries(p_dispatcher text, p_limit integer, p_lease_s double precision,
                                                p_finished bigint[] DEFAULT '{}', p_only bigint[] DEFAULT NULL)
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
    v_now        timestamptz := clock_timestamp();
    v_lease      timestamptz := clock_timestamp() + make_interval(secs => p_lease_s);
    v_left       integer := p_limit;
    v_defaults   jsonb := coalesce(whk.delivery_config('rate_limit.webhook_default'), '{}'::jsonb);
    w            record;
    c            record;
    v_req        integer;
    v_in_flight  integer;
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
               wh.rate_limit_per_second, wh.rate_limit_burst,
               r.breaker_state, r.probe_at, r.probe_until, r.tokens, r.tokens_at
        FROM whk.whk_01_webhooks wh
        JOIN whk.webhook_runtime r ON r.webhook_id = wh.id
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL AND wh.quarantined_at IS NULL
          AND (p_only IS NULL OR wh.id = ANY (p_only))
          -- One probe of the webhook's due index. OFFSET 0 keeps the EXISTS a per-webhook probe: flattened
          -- into a semi-join, the generic plan read every due delivery of every webhook and grouped them by
          -- webhook (measured in a 20,000-event drain: ~3 ms per claim, growing with the backlog).
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                      OFFSET 0)
        ORDER BY r.last_claim_at NULLS FIRST, wh.id
        FOR UPDATE OF r SKIP LOCKED
    LOOP
        EXIT WHEN v_left <= 0;

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
        FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'in_flight';
        IF cardinality(p_finished) > 0 THEN
            SELECT v_in_flight - CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
            INTO v_in_flight
            FROM whk.whk_03_entregas d
            WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id AND d.status = 'in_flight'
              AND d.claimed_by = p_dispatcher;
        END IF;
        v_req := least(v_req, greatest(w.max_in_flight - v_in_flight, 0));
        CONTINUE WHEN v_req <= 0;

        -- Webhook token bucket (requests per second; burst defaults to one second's worth).
        v_rate := coalesce(w.rate_limit_per_second::double precision,
                           (v_defaults ->> 'per_second')::double precision);
        IF v_rate IS NOT NULL THEN
            v_burst := coalesce(w.rate_limit_burst::double precision, (v_defaults ->> 'burst')::double precision,
                                greatest(1.0, ceil(v_rate)));
            v_tokens := least(v_burst, coalesce(w.tokens, v_burst)
                                       + v_rate * greatest(extract(epoch FROM v_now - w.tokens_at), 0));
            v_req := least(v_req, floor(v_tokens)::integer);
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Consumer token bucket and daily quota, shared by all of the consumer's webhooks.
        SELECT a.rate_limit_per_second::double precision AS rate, a.rate_limit_burst::double precision AS burst,
               a.quota_deliveries_per_day AS quota, cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
        INTO c
        FROM whk.whk_04_assinantes a
        LEFT JOIN whk.consumer_runtime cr ON cr.consumer_id = a.id
        WHERE a.id = w.consumer_id;
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
                v_req := least(v_req, greatest(c.quota - CASE WHEN c.quota_day = v_now::date
                                                              THEN c.quota_used ELSE 0 END, 0)::integer);
            END IF;
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Pick the rows (mode by mode), then claim them with one statement shared by every mode.
        v_batch := NULL;
        IF w.delivery_mode = 'batch' THEN
            SELECT count(*), min(s.next_attempt_at) INTO v_due, v_oldest
            FROM (SELECT d.next_attempt_at FROM whk.whk_03_entregas d
                  WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                  ORDER BY d.next_attempt_at, d.id
                  LIMIT w.batch_size) s;
            CONTINUE WHEN v_due < w.batch_size
                      AND v_oldest > v_now - make_interval(secs => w.batch_window_ms / 1000.0);
            v_batch := gen_random_uuid();
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT w.batch_size
                FOR UPDATE SKIP LOCKED) p;
        ELSIF w.delivery_mode = 'ordered' THEN
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                JOIN (SELECT DISTINCT ON (x.ordering_key) x.id, x.status, x.next_attempt_at
                      FROM whk.whk_03_entregas x
                      WHERE x.webhook_id = w.id AND x.status IN ('pending', 'in_flight', 'awaiting_ack')
                        AND x.ordering_key IS NOT NULL
                      ORDER BY x.ordering_key, x.commit_seq, x.id) h ON h.id = d.id
                WHERE h.status = 'pending' AND h.next_attempt_at <= v_now AND d.status = 'pending'
                ORDER BY h.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE OF d SKIP LOCKED) p;
        ELSE
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE SKIP LOCKED) p;
        END IF;
        CONTINUE WHEN v_ids IS NULL;

        RETURN QUERY
        WITH claimed AS (
            UPDATE whk.whk_03_entregas d
            SET status = 'in_flight', lease_until = v_lease, claimed_by = p_dispatcher, batch_id = v_batch,
                updated_at = v_now
            WHERE d.id = ANY (v_ids)
            RETURNING d.*
        )
        SELECT k.id, k.webhook_id, k.event_id, k.event_type, k.attempts, k.schedule_offset, k.batch_id,
               k.commit_seq, k.ordering_key, whk.event_envelope(o)::text
        FROM claimed k
        JOIN whk.outbox o ON o.id = k.outbox_id AND o.created_at = k.event_created_at;
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

-- Route up to p_limit pending outbox events (see whk.route_outbox for the routing rules) and let the
-- calling dispatcher TAKE up to p_take of the new deliveries at once: they are inserted already in flight,
-- leased to p_dispatcher, and returned with their payload. A fresh event for an unconstrained immediate
-- webhook then costs one write of its delivery row instead of an INSERT plus a claim UPDATE (each of those
-- rewrites every index of whk_03_entregas), and it reaches the HTTP client in the same round trip.
--
-- Only deliveries the fair claim would hand out at once are taken, so every rule still holds: the
-- webhook is in immediate mode (one request per delivery) or batch mode (only full batches of batch_size,
-- one request each, under one batch_id) with no delay, and the event is due now; the webhook has no due
-- backlog (fresh events never overtake waiting ones); its breaker is closed; no token bucket applies
-- (webhook, default or consumer) and the consumer has no daily quota; the in-flight cap (in requests) has
-- room; at most p_take requests are taken. The webhook's runtime row is locked FOR UPDATE SKIP LOCKED like the claim does, so a webhook being
-- claimed by another dispatcher right now is simply not taken from (its deliveries stay pending and are
-- claimed normally). Everything else stays pending for whk.claim_deliveries.
--
-- Returns one row per taken delivery, each carrying `routed` (events routed), plus, when nothing was
-- taken, one row with only `routed` set.
--
-- p_finished: the caller's deliveries whose request has ended, outcome not yet recorded; the in-flight cap
-- does not count them (see whk.claim_deliveries, migration 0022).
--
-- Quarantine (whk.quarantine_webhook): a webhook quarantined while routing (stage 'route': its data broke
-- this statement) is not routed to; one quarantined at a later stage still gets its deliveries, pending,
-- so nothing is lost while it waits, but none is taken here (the claim skips it too). p_only (NULL = every
-- webhook) restricts the fan-out to those webhooks: whk.isolate_round_faults probes with it; the
-- dispatcher's rounds never pass it.
CREATE OR REPLACE FUNCTION whk.route_and_take(p_limit integer, p_dispatcher text, p_take integer,
                                              p_lease_s double precision, p_finished bigint[] DEFAULT '{}',
                                              p_only bigint[] DEFAULT NULL)
RETURNS TABLE (routed integer, delivery_id bigint, webhook_id bigint, event_id uuid, event_type text,
               attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text,
               payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Every query here has an index made for it, and its plan is cached for the session: a generic plan made
-- while the tables were small (a fresh install, the first seconds after a truncate or a new partition)
-- kept seq-scanning them as they grew, until an autoanalyze. Measured: routing 1 event went from 1.8 to
-- 2.6 ms as 1,500 rows accumulated. No JIT: a plan that still had to seq-scan would cost ~1e10 with seq
-- scans disabled and be JIT-compiled at every execution.
-- Always the generic plan: with plan_cache_mode = auto PostgreSQL compares the generic plan with the first
-- custom ones, and the choice it keeps depends on the first calls' sizes. Measured (0014): when it kept
-- custom plans, recording one outcome spent ~1.9 ms planning its statement at every flush; for a round of
-- 1,000 events the custom plan took 225 ms and the generic one 157 ms, and 1.2 vs 2.9 ms for one event.
-- No statement here has a join whose generic plan grows faster than its input (each was measured at 1 to
-- 1,000 rows), so the generic plan is the right one at every size.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_lease    timestamptz := clock_timestamp() + make_interval(secs => p_lease_s);
    v_ids      bigint[];
    v_created  timestamptz[];
    v_routed   integer;
    v_taken    bigint;
    v_defaults jsonb;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whk.route_outbox')) THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer, NULL::integer,
                            NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;

    -- The batch, in id order (within one visibility batch id order is the best commit-order proxy). Kept as
    -- arrays: every later step reads them once (a CTE referenced from a join was re-scanned per row).
    SELECT array_agg(p.id ORDER BY p.id), array_agg(p.created_at ORDER BY p.id) INTO v_ids, v_created
    FROM (SELECT o.id, o.created_at
          FROM whk.outbox o
          WHERE o.status = 'pending'
          ORDER BY o.id
          LIMIT p_limit
          FOR UPDATE SKIP LOCKED) p;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer, NULL::integer,
                            NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;
    -- A configured default token bucket applies to every webhook: then nothing is taken here.
    v_defaults := whk.delivery_config('rate_limit.webhook_default');
    IF v_defaults ->> 'per_second' IS NOT NULL THEN
        p_take := 0;
    END IF;

    RETURN QUERY
    WITH numbered AS MATERIALIZED (
        SELECT u.id, u.created_at, nextval('whk.outbox_commit_seq') AS seq
        FROM unnest(v_ids, v_created) WITH ORDINALITY AS u(id, created_at, n)
        ORDER BY u.n
    ), routed AS (
        UPDATE whk.outbox o
        SET status = 'routed', routed_at = v_now, commit_seq = n.seq,
            valid = CASE WHEN v.checked THEN v.error IS NULL ELSE o.valid END,
            validation_error = CASE WHEN v.checked THEN v.error ELSE o.validation_error END
        FROM numbered n
        JOIN whk.outbox src ON src.id = n.id AND src.created_at = n.created_at
        -- The delivered body, built once per event (OFFSET 0 keeps the sub-select from being pulled up,
        -- which would evaluate the envelope again for validation and for RETURNING).
        CROSS JOIN LATERAL (SELECT whk.event_envelope(src) AS payload OFFSET 0) env
        LEFT JOIN LATERAL (
            -- Downstream validation of non-strict registered types. The version's compiled check
            -- (whk_02_eventos_versoes.check_path) accepts a valid envelope here, in the statement; only what it
            -- does not accept goes through whk.validate_payload, which decides and names the error.
            SELECT true AS checked,
                   CASE WHEN env.payload -> 'type' = to_jsonb(src.event_type)
                             AND jsonb_typeof(env.payload -> 'timestamp') = 'string'
                             AND coalesce((env.payload -> 'data') @@ ver.check_path, false)
                        THEN NULL
                        ELSE whk.validate_payload(src.event_type, src.event_version, env.payload) END AS error
            FROM whk.whk_02_eventos e
            LEFT JOIN LATERAL (SELECT x.check_path
                                 FROM whk.whk_02_eventos_versoes x
                                WHERE x.event_type_id = e.id AND x.major = coalesce(src.event_version, e.current_major)
                                ORDER BY x.minor DESC
                                LIMIT 1) ver ON true
            WHERE e.name = src.event_type AND NOT e.strict AND src.valid IS NULL
            OFFSET 0  -- not pulled up: the verdict is computed once, not once per column that reads it
        ) v ON true
        WHERE o.id = n.id AND o.created_at = n.created_at
        RETURNING o.id, o.created_at, o.event_id, o.event_type, o.event_version, o.event_key, env.payload,
                  o.deliver_at, o.commit_seq
    ), targets AS (
        -- Subscriptions are matched once per (event type, webhook), not per event: a batch holds few types.
        SELECT t.event_type, w.id, w.consumer_id, w.delivery_mode, w.ordering_key_path, w.delay_seconds,
               w.payload_version, w.filter
        FROM (SELECT DISTINCT r.event_type FROM routed r) t
        JOIN whk.whk_01_webhooks w
          ON w.status = 'active' AND w.deleted_at IS NULL AND whk.event_type_matches(w.event_types, t.event_type)
         AND w.quarantine_stage IS DISTINCT FROM 'route'
         AND (p_only IS NULL OR w.id = ANY (p_only))
    ), takers AS MATERIALIZED (
        -- Webhooks whose new deliveries may be taken now, and how many requests (in-flight cap room; a batch
        -- in flight is one request; the caller's finished ones, found by primary key, do not count: see
        -- whk.claim_deliveries). Only webhooks with no due backlog: fresh events must not overtake (or
        -- starve) deliveries already waiting for the fair claim.
        SELECT w.id, w.delivery_mode AS mode, w.batch_size,
               w.max_in_flight - (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.whk_03_entregas d
                                  WHERE d.webhook_id = w.id AND d.status = 'in_flight')
                               + (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.whk_03_entregas d
                                  WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id
                                    AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher) AS room
        FROM whk.whk_01_webhooks w
        JOIN whk.webhook_runtime rt ON rt.webhook_id = w.id
        JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id
        WHERE p_take > 0
          AND w.id IN (SELECT DISTINCT t.id FROM targets t)
          AND w.delivery_mode IN ('immediate', 'batch') AND w.delay_seconds = 0
          AND w.quarantined_at IS NULL
          AND w.rate_limit_per_second IS NULL
          AND a.rate_limit_per_second IS NULL AND a.quota_deliveries_per_day IS NULL
          AND rt.breaker_state = 'closed'
          -- OFFSET 0: a probe of this webhook's due index, not an anti-join that reads every due delivery of
          -- every webhook (the generic plan's choice; see whk.claim_deliveries).
          AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                          WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                          OFFSET 0)
        FOR UPDATE OF rt SKIP LOCKED
    ), matched AS (
        SELECT r.event_id, r.id AS outbox_id, r.created_at, r.event_type, r.commit_seq, w.id AS webhook_id,
               w.consumer_id,
               CASE WHEN w.delivery_mode = 'ordered' THEN
                   coalesce(jsonb_path_query_first(r.payload, w.ordering_key_path, '{}'::jsonb, true) #>> '{}',
                            r.event_key, '')
               END AS ordering_key,
               greatest(v_now, coalesce(r.deliver_at, r.created_at) + make_interval(secs => w.delay_seconds))
                   AS due_at,
               k.room, k.mode, k.batch_size,
               k.id IS NOT NULL AND coalesce(r.deliver_at, r.created_at) <= v_now AS takeable
        FROM routed r
        JOIN targets w
          ON w.event_type = r.event_type
         AND (w.payload_version IS NULL OR w.payload_version = r.event_version)
         AND (w.filter IS NULL OR coalesce(r.payload @@ w.filter, false))
        LEFT JOIN takers k ON k.id = w.id
    ), numbered_requests AS (
        -- Request number per webhook (0-based): one per delivery, or one per batch_size deliveries for a
        -- batch webhook, where only FULL batches are taken (a partial one waits for its window in the claim).
        SELECT m.*, CASE WHEN m.mode = 'batch' THEN (m.n - 1) / m.batch_size ELSE m.n - 1 END AS req
        FROM (SELECT m.*,
                     row_number() OVER (PARTITION BY m.webhook_id, m.takeable ORDER BY m.commit_seq) AS n,
                     count(*) OVER (PARTITION BY m.webhook_id, m.takeable) AS cnt
              FROM matched m) m
    ), ranked AS (
        SELECT x.*,
               x.takeable AND x.req < x.room
               AND (x.mode <> 'batch' OR (x.req + 1) * x.batch_size <= x.cnt) AS within_cap
        FROM numbered_requests x
    ), chosen AS (
        SELECT x.*,
               x.within_cap AND dense_rank() OVER (PARTITION BY x.within_cap ORDER BY x.webhook_id, x.req)
                                <= p_take AS taken
        FROM ranked x
    ), batches AS MATERIALIZED (
        SELECT b.webhook_id, b.req, gen_random_uuid() AS batch_id
        FROM (SELECT DISTINCT c.webhook_id, c.req FROM chosen c WHERE c.taken AND c.mode = 'batch') b
    ), fanned AS (
        INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, ordering_key, commit_seq, next_attempt_at, status,
                                         lease_until, claimed_by, batch_id)
        SELECT c.event_id, c.outbox_id, c.created_at, c.event_type, c.webhook_id, c.consumer_id, c.ordering_key,
               c.commit_seq, c.due_at,
               CASE WHEN c.taken THEN 'in_flight' ELSE 'pending' END,
               CASE WHEN c.taken THEN v_lease END,
               CASE WHEN c.taken THEN p_dispatcher END,
               b.batch_id
        FROM chosen c
        LEFT JOIN batches b ON b.webhook_id = c.webhook_id AND b.req = c.req AND c.taken
        ORDER BY c.commit_seq, c.webhook_id
        ON CONFLICT (event_id, webhook_id) DO NOTHING
        RETURNING id, webhook_id, event_id, event_type, attempts, schedule_offset, commit_seq, ordering_key,
                  outbox_id, event_created_at, status, batch_id
    ), runtime AS (
        -- Only webhooks without a runtime row: ON CONFLICT on an existing row whose last version is being
        -- written by another transaction (an outcome moving the breaker) waits for it, and while this
        -- statement holds other runtime rows (takers) that wait could close a deadlock cycle.
        INSERT INTO whk.webhook_runtime (webhook_id)
        SELECT DISTINCT f.webhook_id FROM fanned f
        WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime x WHERE x.webhook_id = f.webhook_id)
        ON CONFLICT (webhook_id) DO NOTHING
    ), served AS (
        -- The fairness cursor: a webhook served here counts as served.
        UPDATE whk.webhook_runtime rt
        SET last_claim_at = v_now
        FROM (SELECT DISTINCT f.webhook_id FROM fanned f WHERE f.status = 'in_flight') s
        WHERE rt.webhook_id = s.webhook_id
    ), fired AS (
        -- Firing history in aggregate: one UPDATE per batch, never per row in the ERP transaction.
        UPDATE whk.whk_02_eventos e
        SET fire_count = e.fire_count + c.n, last_fired_at = v_now
        FROM (SELECT r.event_type, count(*) AS n FROM routed r GROUP BY r.event_type) c
        WHERE e.name = c.event_type
    )
    -- The taken deliveries with their body, rebuilt from the outbox row by its primary key (the statement's
    -- snapshot still sees the row as routing found it; whk.event_envelope is deterministic). Joining `fanned`
    -- to `matched` instead was a nested loop over two CTE scans in the generic plan (a CTE is estimated at a
    -- handful of rows): quadratic, ~280 ms of a 1,000-event round.
    SELECT (SELECT count(*) FROM routed)::integer, f.id, f.webhook_id, f.event_id, f.event_type, f.attempts,
           f.schedule_offset, f.batch_id, f.commit_seq, f.ordering_key, whk.event_envelope(o)::text
    FROM fanned f
    JOIN whk.outbox o ON o.id = f.outbox_id AND o.created_at = f.event_created_at
    WHERE f.status = 'in_flight'
    ORDER BY f.commit_seq, f.webhook_id;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    IF v_taken = 0 THEN
        v_routed := cardinality(v_ids);  -- every picked event was routed
        RETURN QUERY SELECT v_routed, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                            NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
    END IF;
END;
$$;

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
        SELECT EXISTS (
            SELECT 1 FROM whk.whk_01_webhooks wh
            WHERE wh.status = 'active' AND wh.deleted_at IS NULL AND wh.quarantined_at IS NULL
              -- OFFSET 0: a probe per webhook, never a semi-join over every due delivery (whk.claim_deliveries).
              AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                          WHERE d.webhook_id = wh.id AND d.status = 'pending'
                            AND d.next_attempt_at <= clock_timestamp()
                          OFFSET 0))
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

-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- Quarantined webhooks wait for an operator, not for time: they are left out.
-- The dispatcher sleeps until then (or a wake-up, or its poll interval, whichever comes first).
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and was parsed and planned at every
-- call (measured: ~0.45 ms of planning per call, the dispatcher asks up to ten times a second); PL/pgSQL
-- keeps the plan for the session.
CREATE OR REPLACE FUNCTION whk.next_wakeup()
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
-- The kept plan stays on its indexes, no JIT: the reason is given once, at whk.route_and_take.
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    RETURN (SELECT min(greatest(
               CASE WHEN w.delivery_mode = 'batch'
                    THEN n.due + make_interval(secs => w.batch_window_ms / 1000.0) ELSE n.due END,
               CASE WHEN r.breaker_state = 'open' THEN r.probe_at END,
               CASE WHEN coalesce(w.rate_limit_per_second, 0) > 0 AND r.tokens IS NOT NULL AND r.tokens < 1
                    -- A hint only: the rate's floor keeps the division finite whatever the row holds.
                    THEN r.tokens_at + make_interval(secs => least((1 - r.tokens)
                                                                   / greatest(w.rate_limit_per_second::double precision, 0.001),
                                                                   86400))
               END))
    FROM whk.whk_01_webhooks w
    JOIN whk.webhook_runtime r ON r.webhook_id = w.id
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS due FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'pending'
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) n
    WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL);
END;
$$;

-- Quarantine a webhook: the dispatcher stops claiming for it (and, at stage 'route', stops routing to it)
-- because its data made a shared delivery statement fail, or the SSRF guard refused its endpoint. Without
-- this, one bad row fails the set-based statements of every dispatcher round for every webhook.
--
-- p_stage: 'route' (routing its events failed), 'claim' (claiming its deliveries failed), 'record' (writing
-- its outcomes failed), 'ssrf' (the SSRF guard refused its endpoint). p_sqlstate: the error's SQLSTATE
-- (NULL for 'ssrf'). The state is orthogonal to status (active/paused/disabled) and to the breaker; nothing
-- else changes, so clearing it (whk.clear_webhook_quarantine) puts the webhook back where it was. Its
-- deliveries wait as they are: pending ones stay pending, in-flight ones come back by lease expiry.
--
-- Emits `whk.webhook.quarantined` into the outbox (a durable record, deliverable to webhooks that subscribe
-- to it) and, with p_actor, an audit row (whk.audit_log, looked up at run time like whk.disable_webhook).
-- Returns false when the webhook was already quarantined (the first error is kept) or does not exist.
CREATE OR REPLACE FUNCTION whk.quarantine_webhook(p_webhook_id bigint, p_stage text, p_reason text,
                                                  p_sqlstate text DEFAULT NULL, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_reason text := left(coalesce(p_reason, 'unknown error'), 2000);
BEGIN
    IF p_stage IS NULL OR p_stage NOT IN ('route', 'claim', 'record', 'ssrf') THEN
        RAISE EXCEPTION 'unknown quarantine stage %', coalesce(p_stage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use route, claim, record or ssrf';
    END IF;
    UPDATE whk.whk_01_webhooks w
    SET quarantined_at = clock_timestamp(), quarantine_stage = p_stage, quarantine_reason = v_reason,
        quarantine_sqlstate = p_sqlstate, updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.quarantined_at IS NULL
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.quarantined', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id, 'name', v_hook.name,
                               'url', v_hook.url, 'stage', p_stage, 'sqlstate', p_sqlstate, 'reason', v_reason,
                               'actor', coalesce(p_actor, current_user)),
            'EMIT');

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.quarantined'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('quarantined', false),
              jsonb_build_object('quarantined', true, 'stage', p_stage, 'sqlstate', p_sqlstate,
                                 'reason', v_reason);
    END IF;
    RETURN true;
END;
$$;

-- Lift a webhook's quarantine (whk.quarantine_webhook) once its data is fixed: the dispatcher claims for it
-- again, and its deliveries that waited pending are due at once (same event_id, so the same webhook-id;
-- their retry schedule restarts: a quarantine is not the endpoint's failure). If the cause is still there,
-- the next round quarantines it again. Status, breaker and parked deliveries are not touched.
-- The API audits the operator's request itself (POST /api/whk/webhooks/{id}/clear-quarantine).
-- Returns false when the webhook was not quarantined.
CREATE OR REPLACE FUNCTION whk.clear_webhook_quarantine(p_webhook_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET quarantined_at = NULL, quarantine_stage = NULL, quarantine_reason = NULL, quarantine_sqlstate = NULL,
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.quarantined_at IS NOT NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE whk.whk_03_entregas d
    SET next_attempt_at = clock_timestamp(), schedule_offset = d.attempts, updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    -- Time in quarantine is no failure of the endpoint: an unbroken failure streak restarts its
    -- auto-disable window now (whk.auto_disable_webhooks skips quarantined webhooks meanwhile).
    UPDATE whk.webhook_runtime r
    SET failing_since = clock_timestamp()
    WHERE r.webhook_id = p_webhook_id AND r.failing_since IS NOT NULL;
    PERFORM whk.wake_dispatchers();
    RETURN true;
END;
$$;

-- Run one stage of a dispatcher round restricted to some webhooks, then undo it: the error it raised (its
-- SQLSTATE and message), or no row when it ran cleanly. whk.isolate_round_faults bisects with it.
--
-- p_stage 'route' runs whk.route_and_take, 'claim' runs whk.route_and_take then whk.claim_deliveries, as a
-- round does (the claim may fail on deliveries routed a moment before, in the same round), and
-- 'claim_alone' only the claim (when routing itself fails for no webhook in particular), each with
-- p_only = p_ids: the real statements, so a probe exercises exactly what failed. Whatever the probe did (routed, claimed,
-- locked) is rolled back by raising WHK00 inside its own block (a subtransaction).
--
-- Only errors that data can cause are caught and returned, the classes a webhook's row can provoke:
-- 22 data exception (out of range, underflow, invalid text representation), 23 integrity constraint,
-- 2F SQL routine, 38/39 external routine, P0 PL/pgSQL (RAISE, ASSERT), 54 program limit (stack depth,
-- statement too complex), XX internal (corrupt data). Anything else (a lost connection, a statement
-- timeout, a missing function after a bad deploy, a lock timeout) is not about one webhook: it propagates.
CREATE OR REPLACE FUNCTION whk.fault_probe(p_stage text, p_dispatcher text, p_route_limit integer,
                                           p_lease_s double precision, p_ids bigint[])
RETURNS TABLE (error_state text, error_message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_state text;
    v_msg   text;
BEGIN
    IF p_stage IS NULL OR p_stage NOT IN ('route', 'claim', 'claim_alone') THEN
        RAISE EXCEPTION 'unknown probe stage %', coalesce(p_stage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use route, claim or claim_alone';
    END IF;
    BEGIN
        IF p_stage = 'route' THEN
            PERFORM count(*) FROM whk.route_and_take(p_route_limit, p_dispatcher, 1000, p_lease_s, '{}', p_ids);
        ELSE
            IF p_stage = 'claim' THEN
                PERFORM count(*) FROM whk.route_and_take(p_route_limit, p_dispatcher, 1000, p_lease_s, '{}', p_ids);
            END IF;
            PERFORM count(*) FROM whk.claim_deliveries(p_dispatcher, 100000, p_lease_s, '{}', p_ids);
        END IF;
        RAISE EXCEPTION 'probe done: undo it' USING ERRCODE = 'WHK00';
    EXCEPTION
        WHEN SQLSTATE 'WHK00' THEN
            RETURN;
        WHEN data_exception OR integrity_constraint_violation OR sql_routine_exception
             OR external_routine_exception OR external_routine_invocation_exception OR plpgsql_error
             OR program_limit_exceeded OR internal_error THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            error_state := v_state;
            error_message := v_msg;
            RETURN NEXT;
    END;
END;
$$;

-- Find and quarantine the webhooks whose data makes a dispatcher round fail, so the next round serves
-- everyone else. The dispatcher calls it only after whk.dispatch_round failed with an error a webhook's
-- data can cause (see whk.fault_probe for the classes): the happy path never pays for it.
--
-- For each stage (route, then claim) it probes the stage with every candidate webhook (whk.fault_probe,
-- rolled back). If that fails, it probes with none: a failure then is not about a webhook (an event, the
-- global configuration) and is reported with webhook_id NULL. Otherwise it bisects the candidates, probing
-- halves of a failing set, down to single webhooks: O(k log n) probes for k culprits among n candidates.
-- Candidates: for route, active webhooks not quarantined at that stage; for claim, active unquarantined
-- webhooks (a claim probe routes first, as the round did: the deliveries that broke the claim may have
-- been routed in the failed round itself, and rolled back with it).
--
-- When routing fails for no webhook in particular (a poison event), the claim is probed alone, so that the
-- routing fault is not blamed on the claim: the dispatcher then keeps claiming while routing is off.
--
-- Culprits are quarantined (whk.quarantine_webhook, stage and SQLSTATE recorded, audited as
-- 'whk-dispatcher:<id>'), EXCEPT when every candidate of a stage (two or more) fails on its own: that is
-- a global fault (for example a poison global default), reported with webhook_id NULL and nothing
-- quarantined. (All of one consumer's webhooks failing on a poison consumer setting looks the same while
-- they are the only candidates; they are quarantined as soon as any other webhook passes the probe.)
-- A failing set whose halves both pass (a fault of the combination) is reported unattributed too.
--
-- Returns one row per culprit (webhook_id, stage, sqlstate, message) and one row per stage that failed
-- without a culprit (webhook_id NULL). No row: the round's error did not reproduce.
CREATE OR REPLACE FUNCTION whk.isolate_round_faults(p_dispatcher text, p_route_limit integer,
                                                    p_lease_s double precision)
RETURNS TABLE (webhook_id bigint, stage text, sqlstate text, message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
#variable_conflict use_column
DECLARE
    v_stage  text;
    v_all    bigint[];
    v_set    bigint[];
    v_half   bigint[];
    v_queue  jsonb;
    v_item   jsonb;
    v_found  jsonb;
    v_n      integer;
    v_h      integer;
    p        record;
    q        record;
    v_any    boolean;
    v_probe  text;
    v_routes boolean := true;  -- routing fails for no webhook in particular: probe the claim alone
BEGIN
    FOREACH v_stage IN ARRAY ARRAY['route', 'claim'] LOOP
        IF v_stage = 'route' THEN
            SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_all
            FROM whk.whk_01_webhooks w
            WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantine_stage IS DISTINCT FROM 'route';
        ELSE
            SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_all
            FROM whk.whk_01_webhooks w
            WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL;
        END IF;

        v_probe := CASE WHEN v_stage = 'claim' AND NOT v_routes THEN 'claim_alone' ELSE v_stage END;
        SELECT * INTO p FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, v_all);
        CONTINUE WHEN NOT FOUND;  -- this stage runs cleanly
        SELECT * INTO q FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, '{}');
        IF FOUND THEN
            -- Fails with no webhook at all: not a webhook's fault.
            v_routes := v_routes AND v_stage <> 'route';
            RETURN QUERY SELECT NULL::bigint, v_stage, q.error_state, q.error_message;
            CONTINUE;
        END IF;

        -- Bisect: the queue holds failing sets with their error; single webhooks found are the culprits.
        v_queue := jsonb_build_array(jsonb_build_object('ids', to_jsonb(v_all), 'state', p.error_state,
                                                        'msg', p.error_message));
        v_found := '[]';
        WHILE jsonb_array_length(v_queue) > 0 LOOP
            v_item := v_queue -> 0;
            v_queue := v_queue - 0;
            v_set := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'ids')::bigint);
            v_n := cardinality(v_set);
            IF v_n = 1 THEN
                v_found := v_found || jsonb_build_array(v_item);
                CONTINUE;
            END IF;
            v_any := false;
            FOR v_h IN 1 .. 2 LOOP
                v_half := CASE WHEN v_h = 1 THEN v_set[1 : v_n / 2] ELSE v_set[v_n / 2 + 1 : v_n] END;
                SELECT * INTO q FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, v_half);
                IF FOUND THEN
                    v_any := true;
                    v_queue := v_queue || jsonb_build_array(jsonb_build_object(
                        'ids', to_jsonb(v_half), 'state', q.error_state, 'msg', q.error_message));
                END IF;
            END LOOP;
            IF NOT v_any THEN
                -- Fails only as a whole: a fault of the combination, not of one webhook.
                v_routes := v_routes AND v_stage <> 'route';
                RETURN QUERY SELECT NULL::bigint, v_stage, v_item ->> 'state', v_item ->> 'msg';
            END IF;
        END LOOP;

        IF jsonb_array_length(v_found) = cardinality(v_all) AND cardinality(v_all) >= 2 THEN
            -- Every candidate fails on its own: a global fault, not theirs.
            v_routes := v_routes AND v_stage <> 'route';
            RETURN QUERY SELECT NULL::bigint, v_stage, p.error_state, p.error_message;
            CONTINUE;
        END IF;
        FOR v_item IN SELECT e FROM jsonb_array_elements(v_found) e LOOP
            PERFORM whk.quarantine_webhook((v_item -> 'ids' ->> 0)::bigint, v_stage, v_item ->> 'msg',
                                           v_item ->> 'state', 'whk-dispatcher:' || p_dispatcher);
            RETURN QUERY SELECT (v_item -> 'ids' ->> 0)::bigint, v_stage, v_item ->> 'state', v_item ->> 'msg';
        END LOOP;
    END LOOP;
END;
$$;

-- Re-enable a disabled or paused webhook: its parked deliveries become pending again (same event_id, so
-- the same webhook-id header), its breaker closes, its failure streak restarts and a quarantine
-- (whk.quarantine_webhook) is lifted: resuming says "deliver again".
-- Returns the number of deliveries released from the parking lot.
CREATE OR REPLACE FUNCTION whk.resume_webhook(p_webhook_id bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_released integer;
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET status = 'active', disabled_reason = NULL, disabled_at = NULL, quarantined_at = NULL,
        quarantine_stage = NULL, quarantine_reason = NULL, quarantine_sqlstate = NULL,
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;

    UPDATE whk.webhook_runtime r
    SET breaker_state = 'closed', consecutive_failures = 0, opened_at = NULL, probe_at = NULL,
        probe_until = NULL, failing_since = NULL
    WHERE r.webhook_id = p_webhook_id;

    UPDATE whk.whk_03_entregas d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'parked';
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;

-- Record the outcomes of finished HTTP requests in one round trip (the dispatcher flushes them in groups).
--
-- One ATTEMPT per HTTP request, however many deliveries it carried: a batch of 1,000 events is one request,
-- so it is logged once (request/response, timing, error class) and its members point at it through
-- whk_03_entregas.attempt_ids. Writing the same request/response 1,000 times was most of the cost of a batch.
--
-- p_attempts is a JSON array, one element per request (ix = its position, referenced by p_attempt_ix):
--   ix, webhook_id, success (bool), failure (bool: counts for the breaker; dispatcher/breaker.is_failure),
--   gone (bool: the endpoint answered 410), batch_id, started_at, duration_ms, request_method, request_url,
--   request_headers, request_body_sha256, request_body_size, response_status, response_headers,
--   response_body, response_truncated, error_class, error_detail, outcome.
-- The deliveries come as parallel arrays (one element per delivery; arrays bind as plain parameters and join
-- by hash, where a JSON document per delivery had to be parsed and re-scanned per row):
--   p_ids, p_attempt_ix (which request), p_attempt_no, p_state ('delivered'|'awaiting_ack'|'pending'|'dead'|
--   'parked'), p_next_at (pending), p_ack_deadline (awaiting_ack), p_dead_reason (dead).
-- The retry decision (next_attempt_at or dead) is made by the caller's pure retry policy; this function
-- applies it, writes the attempt log, moves the shared breaker and failure-streak state (once per request,
-- not per event: a failed batch is one failure), counts usage, and disables webhooks that answered 410.
-- Rows whose lease this dispatcher lost (reclaimed by another) are left alone: the other dispatcher owns
-- them now (at-least-once, never lost); their attempt is logged all the same.
CREATE OR REPLACE FUNCTION whk.record_outcomes(p_dispatcher text, p_attempts jsonb, p_ids bigint[],
                                               p_attempt_ix integer[], p_attempt_no integer[], p_state text[],
                                               p_next_at timestamptz[], p_ack_deadline timestamptz[],
                                               p_dead_reason text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
-- Switched off around the delivery UPDATE only (see there); these clauses restore the caller's values.
SET enable_indexscan = on
SET enable_bitmapscan = on
AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_breaker jsonb := coalesce(whk.delivery_config('delivery.breaker'), '{}'::jsonb);
    v_applied integer;
    v_hook    record;
    -- Each delivery's row version and new state, in id order (the UPDATE after the first statement).
    v_tid     tid[];
    v_state   text[];
    v_no      integer[];
    v_next    timestamptz[];
    v_ack     timestamptz[];
    v_reason  text[];
    v_attempt bigint[];
    v_success boolean[];
    v_code    integer[];
    v_started timestamptz[];
    v_error   text[];
BEGIN
    -- One statement for the attempt log, the breaker and usage: every data-modifying CTE sees the same rows
    -- and runs exactly once. It also finds each delivery's row; the rows are updated right after it.
    WITH items AS MATERIALIZED (
        SELECT * FROM unnest(p_ids, p_attempt_ix, p_attempt_no, p_state, p_next_at, p_ack_deadline, p_dead_reason)
                 AS i(id, ix, attempt_no, state, next_attempt_at, ack_deadline, dead_reason)
    ), attempts AS MATERIALIZED (
        -- Attempt ids are drawn here so the deliveries can point at their request in the same statement.
        SELECT a.*, nextval('whk.whk_03_entregas_tentativas_id_seq') AS attempt_id,
               m.members, m.first_id, m.first_no
        FROM jsonb_to_recordset(p_attempts) AS a(
            ix integer, webhook_id bigint, success boolean, failure boolean, gone boolean, batch_id uuid,
            started_at timestamptz, duration_ms double precision, request_method text, request_url text,
            request_headers jsonb, request_body_sha256 text, request_body_size integer, response_status integer,
            response_headers jsonb, response_body text, response_truncated boolean, error_class text,
            error_detail text, outcome text)
        JOIN (SELECT i.ix, array_agg(i.id ORDER BY i.id) AS members, min(i.id) AS first_id,
                     max(i.attempt_no) AS first_no
              FROM items i GROUP BY i.ix) m ON m.ix = a.ix
    ), logged AS (
        INSERT INTO whk.whk_03_entregas_tentativas (
            id, delivery_id, delivery_ids, webhook_id, attempt_no, batch_id, dispatcher_id, started_at,
            duration_ms, request_method, request_url, request_headers, request_body_sha256, request_body_size,
            response_status, response_headers, response_body, response_truncated, error_class, error_detail,
            outcome)
        OVERRIDING SYSTEM VALUE
        SELECT a.attempt_id, a.first_id, CASE WHEN cardinality(a.members) > 1 THEN a.members END, a.webhook_id,
               a.first_no, a.batch_id, p_dispatcher, coalesce(a.started_at, v_now), a.duration_ms,
               a.request_method, a.request_url, coalesce(a.request_headers, '{}'::jsonb), a.request_body_sha256,
               a.request_body_size, a.response_status, a.response_headers, a.response_body,
               coalesce(a.response_truncated, false), a.error_class, a.error_detail, a.outcome
        FROM attempts a
        -- The attempt happened whether or not we still hold the lease: log it either way (unless the
        -- delivery itself is gone, e.g. deleted with its webhook).
        -- (Probed through p_ids: as an EXISTS on a.first_id the planner could hash-join against a scan of
        -- the whole table.)
        WHERE a.first_id IN (SELECT d.id FROM whk.whk_03_entregas d WHERE d.id = ANY (p_ids))
    ), changes AS MATERIALIZED (
        -- Each delivery with its request's outcome and its row's current version, found by a primary-key
        -- probe per delivery (a LATERAL that is not flattened: no plan can drive it from the table).
        SELECT i.id, x.tid, i.state, i.attempt_no, i.next_attempt_at, i.ack_deadline, i.dead_reason,
               a.attempt_id, a.success, a.response_status, a.started_at,
               CASE WHEN a.success THEN NULL
                    ELSE coalesce(a.error_class || ': ' || a.error_detail, a.error_class, a.outcome) END AS error
        FROM items i
        JOIN attempts a ON a.ix = i.ix
        CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM whk.whk_03_entregas y WHERE y.id = i.id LIMIT 1) x
    ), agg AS (
        -- Shared breaker and failure streak, per webhook, from this group of requests.
        SELECT a.webhook_id, bool_or(a.success) AS ok, count(*) FILTER (WHERE a.failure) AS fails
        FROM attempts a
        GROUP BY a.webhook_id
    ), cfg AS (
        SELECT a.webhook_id, a.ok, a.fails,
               coalesce((w.breaker_config ->> 'failure_threshold')::integer,
                        (v_breaker ->> 'failure_threshold')::integer, 5) AS threshold,
               coalesce((w.breaker_config ->> 'open_s')::double precision,
                        (w.breaker_config ->> 'open_seconds')::double precision,
                        (v_breaker ->> 'open_s')::double precision,
                        (v_breaker ->> 'open_seconds')::double precision, 30) AS open_s,
               coalesce((w.breaker_config ->> 'open_max_s')::double precision,
                        (v_breaker ->> 'open_max_s')::double precision, 600) AS open_max_s
        FROM agg a JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
    ), breaker AS (
        UPDATE whk.webhook_runtime r
        SET breaker_state = CASE
                WHEN c.ok THEN 'closed'
                WHEN c.fails = 0 THEN r.breaker_state
                WHEN r.breaker_state = 'half_open' THEN 'open'
                WHEN r.consecutive_failures + c.fails >= c.threshold THEN 'open'
                ELSE r.breaker_state END,
            opened_at = CASE
                WHEN c.ok THEN NULL
                WHEN c.fails > 0 AND (r.breaker_state = 'half_open'
                                      OR (r.breaker_state = 'closed' AND r.consecutive_failures + c.fails >= c.threshold))
                    THEN v_now
                ELSE r.opened_at END,
            probe_at = CASE
                WHEN c.ok THEN NULL
                WHEN c.fails > 0 AND (r.breaker_state = 'half_open'
                                      OR (r.breaker_state = 'closed' AND r.consecutive_failures + c.fails >= c.threshold))
                    THEN v_now + make_interval(secs => least(
                             c.open_s * power(2, CASE WHEN r.breaker_state = 'half_open'
                                                      THEN r.failed_probes + 1 ELSE 0 END),
                             greatest(c.open_max_s, c.open_s)))
                ELSE r.probe_at END,
            failed_probes = CASE
                WHEN c.ok THEN 0
                WHEN c.fails > 0 AND r.breaker_state = 'half_open' THEN r.failed_probes + 1
                ELSE r.failed_probes END,
            probe_until = CASE WHEN c.ok OR c.fails > 0 THEN NULL ELSE r.probe_until END,
            consecutive_failures = CASE WHEN c.ok THEN 0 ELSE r.consecutive_failures + c.fails END,
            failing_since = CASE WHEN c.ok THEN NULL
                                 WHEN c.fails > 0 THEN coalesce(r.failing_since, v_now) ELSE r.failing_since END,
            last_success_at = CASE WHEN c.ok THEN v_now ELSE r.last_success_at END,
            last_failure_at = CASE WHEN c.fails > 0 THEN v_now ELSE r.last_failure_at END
        FROM cfg c
        WHERE r.webhook_id = c.webhook_id
          -- A success on a healthy, closed breaker changes nothing but last_success_at: written at most every
          -- 10 s, so a busy webhook's runtime row is not rewritten per flush (while this UPDATE holds it, the
          -- claim, which locks it SKIP LOCKED, passes the webhook by).
          AND (c.fails > 0 OR r.breaker_state <> 'closed' OR r.consecutive_failures > 0 OR r.failed_probes > 0
               OR r.failing_since IS NOT NULL OR r.last_success_at IS NULL
               OR (c.ok AND r.last_success_at < v_now - interval '10 seconds'))
    ), usage AS (
        -- Consumer usage and activity, in aggregate, counted in deliveries.
        UPDATE whk.whk_04_assinantes s
        SET usage_deliveries_total = s.usage_deliveries_total + u.total,
            usage_deliveries_failed = s.usage_deliveries_failed + coalesce(u.failed, 0),
            last_activity_at = v_now
        FROM (SELECT w.consumer_id, sum(cardinality(a.members)) AS total,
                     sum(cardinality(a.members)) FILTER (WHERE NOT coalesce(a.success, false)) AS failed
              FROM attempts a JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
              GROUP BY w.consumer_id) u
        WHERE s.id = u.consumer_id
    )
    SELECT array_agg(c.tid ORDER BY c.id), array_agg(c.state ORDER BY c.id), array_agg(c.attempt_no ORDER BY c.id),
           array_agg(c.next_attempt_at ORDER BY c.id), array_agg(c.ack_deadline ORDER BY c.id),
           array_agg(c.dead_reason ORDER BY c.id), array_agg(c.attempt_id ORDER BY c.id),
           array_agg(c.success ORDER BY c.id), array_agg(c.response_status ORDER BY c.id),
           array_agg(c.started_at ORDER BY c.id), array_agg(c.error ORDER BY c.id)
    INTO v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error
    FROM changes c;

    -- The deliveries' new states, by row version (TID scans): linear whatever the statistics say. Joined by
    -- id instead, the plan depended on statistics that are whatever the last ANALYZE saw (an empty table
    -- after a truncate, nothing in flight...), and plans that drove the join from an index scanned the
    -- outcomes once per row of the table: quadratic (measured in a batch drain: 6,000 in flight x 1,000
    -- outcomes, 0.9-3.4 s per flush). With index scans off for this statement only a TID scan per
    -- outcome is left. A row updated since it was found (a lease reclaimed by another dispatcher) has a
    -- new version and fails the TID or the ownership check: it is left alone, its attempt logged all the
    -- same.
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    UPDATE whk.whk_03_entregas d
    SET status = c.state,
        attempts = greatest(d.attempts, c.attempt_no),
        attempt_ids = d.attempt_ids || c.attempt_id,
        next_attempt_at = CASE WHEN c.state = 'pending' THEN c.next_attempt_at ELSE d.next_attempt_at END,
        lease_until = NULL,
        claimed_by = NULL,
        last_status_code = c.response_status,
        last_error = c.error,
        last_attempt_at = c.started_at,
        delivered_at = CASE WHEN c.success THEN v_now ELSE d.delivered_at END,
        acked_at = CASE WHEN c.state = 'delivered' THEN v_now ELSE d.acked_at END,
        ack_deadline = CASE WHEN c.state = 'awaiting_ack' THEN c.ack_deadline END,
        dead_at = CASE WHEN c.state = 'dead' THEN v_now END,
        dead_reason = CASE WHEN c.state = 'dead' THEN c.dead_reason END,
        updated_at = v_now
    FROM unnest(v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error)
         AS c(tid, state, attempt_no, next_attempt_at, ack_deadline, dead_reason, attempt_id, success,
              response_status, started_at, error)
    WHERE d.ctid = c.tid AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher;
    GET DIAGNOSTICS v_applied = ROW_COUNT;
    PERFORM set_config('enable_indexscan', 'on', true), set_config('enable_bitmapscan', 'on', true);

    -- 410 disables the webhook; an SSRF refusal quarantines it (stage 'ssrf'): no request can reach the
    -- endpoint under this dispatcher's policy, so its deliveries wait (pending) for an operator instead of
    -- burning their retry schedule as if the endpoint were down. One pass over the attempts for both.
    FOR v_hook IN
        SELECT (e ->> 'webhook_id')::bigint AS id, bool_or((e ->> 'gone')::boolean) AS gone,
               min(coalesce(e ->> 'error_detail', 'address refused'))
                   FILTER (WHERE e ->> 'outcome' = 'blocked') AS blocked
        FROM jsonb_array_elements(p_attempts) e
        WHERE (e ->> 'gone')::boolean OR e ->> 'outcome' = 'blocked'
        GROUP BY 1
    LOOP
        IF v_hook.gone THEN
            PERFORM whk.disable_webhook(v_hook.id, 'endpoint answered 410 Gone', 'whk-dispatcher');
        END IF;
        IF v_hook.blocked IS NOT NULL THEN
            PERFORM whk.quarantine_webhook(v_hook.id, 'ssrf', 'ssrf_blocked: ' || v_hook.blocked
                                           || ' (dispatcher ' || p_dispatcher || ')', NULL, 'whk-dispatcher');
        END IF;
    END LOOP;

    RETURN v_applied;
END;
$$;

-- A dispatcher announces itself and proves it is alive (every few seconds). Rows of dispatchers silent
-- for longer than p_forget_after_s are removed: their deliveries are reclaimed by lease expiry anyway,
-- and a stale idle flag would make capture triggers NOTIFY for nobody.
--
-- p_ssrf_policy / p_ssrf_exempt: the SSRF policy this process enforces (a fingerprint and the exempt CIDRs,
-- WHK_ALLOW_PRIVATE_CIDRS). Every dispatcher of a deployment must agree, or which process claims a
-- delivery decides whether it may reach a private address; /api/whk/monitoring/health compares them.
-- p_last_error: why the dispatcher's rounds are failing right now (an error not about one webhook, which
-- it cannot quarantine away), NULL while they succeed; last_error_at keeps when that error first appeared.
CREATE OR REPLACE FUNCTION whk.dispatcher_heartbeat(p_id text, p_hostname text, p_pid integer, p_version text,
                                                    p_stopping boolean, p_forget_after_s double precision,
                                                    p_ssrf_policy text DEFAULT NULL,
                                                    p_ssrf_exempt text[] DEFAULT NULL,
                                                    p_last_error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    INSERT INTO whk.dispatchers AS x (id, hostname, pid, version, stopping, ssrf_policy, ssrf_exempt, last_error,
                                      last_error_at)
    VALUES (p_id, p_hostname, p_pid, p_version, p_stopping, p_ssrf_policy, p_ssrf_exempt, left(p_last_error, 2000),
            CASE WHEN p_last_error IS NOT NULL THEN now() END)
    ON CONFLICT (id) DO UPDATE
    SET heartbeat_at = now(), stopping = excluded.stopping, hostname = excluded.hostname, pid = excluded.pid,
        version = excluded.version, ssrf_policy = excluded.ssrf_policy, ssrf_exempt = excluded.ssrf_exempt,
        last_error = excluded.last_error,
        last_error_at = CASE WHEN excluded.last_error IS NULL THEN NULL
                             WHEN x.last_error IS NOT DISTINCT FROM excluded.last_error THEN x.last_error_at
                             ELSE now() END;

    DELETE FROM whk.dispatchers d
    WHERE d.id <> p_id AND d.heartbeat_at < now() - make_interval(secs => p_forget_after_s);
END;
$$;

-- Disable webhooks that have failed without a single success for the configured window
-- ('delivery.auto_disable_after_s', default 5 days), through whk.disable_webhook (parks their deliveries
-- and emits whk.webhook.disabled). Returns how many were disabled.
CREATE OR REPLACE FUNCTION whk.auto_disable_webhooks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_window double precision := coalesce((whk.delivery_config('delivery.auto_disable_after_s') #>> '{}')::double precision,
                                          432000);
    v_id     bigint;
    v_count  integer := 0;
BEGIN
    FOR v_id IN
        SELECT r.webhook_id FROM whk.webhook_runtime r
        JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
        WHERE w.status = 'active' AND r.failing_since < clock_timestamp() - make_interval(secs => v_window)
          -- A quarantined webhook makes no attempts: it waits for an operator, its streak does not age.
          AND w.quarantined_at IS NULL
    LOOP
        IF whk.disable_webhook(v_id, format('failing without a success for %s seconds', v_window), 'whk-dispatcher') THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;

COMMIT;
