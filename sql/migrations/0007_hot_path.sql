-- 0007 hot_path: Hot path: one inlined quiet-hours rule (whk.quiet_hold_until) for the claim, routing, the round's probe, the wake-up and explain; due-work probes read the due index newest first with the moment as an index bound; the claim counts the caller's finished requests only when the in-flight cap binds; routing probes a webhook's runtime row once per webhook
-- Written by `whk db new-migration`: each block below is the text of the named file.
BEGIN;
SELECT whk.migration_begin(7, 'hot_path');
-- Functions call each other in any order; their bodies are checked when first called (and by the drift test).
SET LOCAL check_function_bodies = off;

-- >>> sql/functions/delivery/quiet_hold_until.sql
-- Until when a consumer's quiet hours hold a webhook's deliveries at p_at: the end of the window in force
-- (whk.quiet_until), or NULL when nothing holds them (no quiet hours, an urgent webhook, or p_at outside
-- every window). The one rule of quiet hours: the claim (whk.claim_deliveries), routing (whk.route_and_take),
-- the round's due probe (whk.dispatch_round), the dispatcher's sleep (whk.next_wakeup), whk.explain and the
-- backlog-age alert all ask it, so they cannot disagree on which deliveries wait.
--
-- A plain SQL expression with no SET clause, so the planner inlines it into the caller's statement: the
-- hot-path plans (tests/db/test_steady_plans.py) keep their shape, and whk.quiet_until is called only for a
-- consumer that has quiet hours and a webhook that is not urgent. STABLE, as whk.quiet_until is. A quoted
-- body, not BEGIN ATOMIC (which would need whk.quiet_until to exist first): its one name is
-- schema-qualified, and it has no operator a search_path could redirect.
CREATE OR REPLACE FUNCTION whk.quiet_hold_until(p_quiet jsonb, p_urgent boolean, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_quiet IS NULL OR p_urgent THEN NULL::timestamptz
                ELSE whk.quiet_until(p_quiet, p_at) END
$$;
COMMENT ON FUNCTION whk.quiet_hold_until(jsonb, boolean, timestamptz) IS
    'Until when quiet hours hold a webhook''s deliveries at a moment (NULL: not held): the one quiet-hours rule.';
-- <<< sql/functions/delivery/quiet_hold_until.sql

-- >>> sql/functions/delivery/quiet_until.sql
-- The end of the consumer's quiet hours at p_at, or NULL when p_at is outside every window.
--
-- A window {"days": ["mon", …], "start": "22:00", "end": "07:00"} starts on each listed day at start, local
-- time in the quiet hours' time_zone, and ends at end the same day, or the next day when end is at or
-- before start: weekdays 22:00-07:00 covers Friday 22:00 to Saturday 07:00, not Sunday night. Windows that
-- touch or overlap are joined (the answer is the end of the last one), up to 16 hops, so a configuration
-- that is quiet all week answers a time at least 16 window ends later, never loops. Local times that do
-- not exist or repeat around a daylight-saving change are resolved as PostgreSQL's AT TIME ZONE does.
--
-- Callers ask it through whk.quiet_hold_until (the one quiet-hours rule: urgent webhooks are not held), so
-- a quiet consumer's waiting deliveries cost no round until the window ends. p_at is a parameter so tests
-- choose the moment.
CREATE OR REPLACE FUNCTION whk.quiet_until(p_quiet jsonb, p_at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_tz   text := p_quiet ->> 'time_zone';
    v_at   timestamptz := p_at;
    v_end  timestamptz;
BEGIN
    IF p_quiet IS NULL OR p_at IS NULL THEN
        RETURN NULL;
    END IF;
    FOR v_hop IN 1 .. 16 LOOP
        -- Windows that started on the local day of v_at or the day before (a window is under 24 hours).
        SELECT max(x.ends) INTO v_end
        FROM jsonb_array_elements(p_quiet -> 'windows') AS w(win)
        CROSS JOIN LATERAL (VALUES ((v_at AT TIME ZONE v_tz)::date),
                                   ((v_at AT TIME ZONE v_tz)::date - 1)) AS d(day)
        CROSS JOIN LATERAL (
            SELECT (d.day + (w.win ->> 'start')::time) AT TIME ZONE v_tz AS starts,
                   (d.day + (w.win ->> 'end')::time
                    + CASE WHEN (w.win ->> 'end')::time <= (w.win ->> 'start')::time
                           THEN interval '1 day' ELSE interval '0' END) AT TIME ZONE v_tz AS ends
        ) x
        WHERE (w.win -> 'days')
              ? (ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])[extract(isodow FROM d.day)::integer]
          AND v_at >= x.starts AND v_at < x.ends;
        EXIT WHEN v_end IS NULL;
        v_at := v_end;
    END LOOP;
    RETURN CASE WHEN v_at > p_at THEN v_at END;
END;
$$;
COMMENT ON FUNCTION whk.quiet_until(jsonb, timestamptz) IS
    'End of the quiet hours in force at a moment (NULL: not quiet then).';
-- <<< sql/functions/delivery/quiet_until.sql

-- >>> sql/functions/delivery/claim_deliveries.sql
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
-- <<< sql/functions/delivery/claim_deliveries.sql

-- >>> sql/functions/delivery/route_and_take.sql
-- Route up to p_limit pending outbox events, and let the calling dispatcher TAKE up to p_take of the new
-- deliveries at once. This is the routing step: the dispatcher runs it through whk.dispatch_round, tests
-- and tools call it with p_take = 0 (route only, nothing taken).
--
-- Routing rules:
-- * Events are picked by STATUS (outbox.status = 'pending'), never by an id watermark: ids are taken before
--   commit, so a low id can become visible after higher ones; a watermark would skip it forever.
-- * Each routed event gets a commit_seq (the order in which it became visible, which is commit order across
--   transactions; within one batch, id order) and is marked routed. Routing runs under a
--   transaction-level advisory try-lock (key hashtext('whk.route_outbox'), the routing lock's name) so
--   commit_seq is monotonic across dispatchers: a second router returns routed = 0 at once and goes on
--   delivering; the lock is held for one short statement batch.
-- * Fan-out is ONE set-based INSERT: every event x every matching webhook (active or paused, not deleted,
--   its consumer active or suspended, its event_types pattern matches, filter true).
-- * Pinned webhooks (payload_version set) get the event rendered to their major (whk.render_event:
--   transforms, plus a "version" member), stored on the delivery as its body; the filter and the
--   ordering-key path read that rendered body, since the subscriber wrote them for its major. When it
--   cannot be rendered (no chain of transforms, a transform raised) the delivery is created parked with
--   the reason in render_problem, filter unchecked, never taken: that one delivery waits for
--   whk.render_parked_deliveries and the rest of the statement goes on (docs/capture.md).
-- * A paused webhook or a suspended consumer gets its deliveries pending, none taken: the claim holds them
--   until it is active again, so nothing committed meanwhile is lost. A disabled webhook or consumer is
--   not routed to. Events nobody subscribes to are routed too and kept for replay.
-- * Filters are SQL/JSON path predicates stored as the jsonpath type (validated by PostgreSQL on write);
--   `@@` yields NULL rather than an error on structural mismatches, which counts as "no match".
-- * Non-strict schema validation: events of registered, non-strict types are checked here with
--   whk.validate_payload and flagged (outbox.valid / validation_error) but still delivered; strict types
--   were validated when emitted (valid = true already); unregistered types stay NULL.
-- * Ordered webhooks get the delivery's ordering_key (ordering_key_path in the envelope, else the event
--   key); each delivery is due at max(now, deliver_at or created_at + the webhook's delay_seconds).
-- * Delayed webhooks with supersede_by_key get the same key (no key: NULL, never superseded), and after the
--   batch whk.supersede_deliveries lets the newest delivery of each key replace the older unsent ones.
--
-- Taking: the taken deliveries are inserted already in flight, leased to p_dispatcher, and returned with
-- their payload. A fresh event for an unconstrained immediate webhook then costs one write of its delivery
-- row instead of an INSERT plus a claim UPDATE (each of those rewrites the queue's indexes), and
-- it reaches the HTTP client in the same round trip.
--
-- Only deliveries the fair claim would hand out at once are taken, so every rule still holds: the
-- webhook and its consumer are active; the webhook is in immediate mode (one request per delivery) or
-- batch mode (only full batches of batch_size, one request each, under one batch_id) with no delay, and
-- the event is due now; the webhook has no due backlog (fresh events never overtake waiting ones); its
-- breaker is closed; no token bucket applies (webhook, default or consumer) and the consumer has no daily
-- quota; the in-flight cap (in requests) has room; at most p_take requests are taken. The webhook's
-- runtime row is locked FOR UPDATE SKIP LOCKED like the claim does, so a webhook being claimed by another
-- dispatcher right now is simply not taken from (its deliveries stay pending and are claimed normally).
-- Everything else stays pending for whk.claim_deliveries. tests/db/test_admission_rules.py holds the table
-- of cases that both functions answer.
--
-- Returns one row per taken delivery, each carrying `routed` (events routed), plus, when nothing was
-- taken, one row with only `routed` set.
--
-- p_finished: the caller's deliveries whose request has ended, outcome not yet recorded; the in-flight cap
-- does not count them (see whk.claim_deliveries).
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
        -- Paused webhooks and suspended consumers still get their deliveries (pending: the claim holds
        -- them until resumed, then they go out in order); disabled ones (webhook or consumer) do not.
        SELECT t.event_type, w.id, w.consumer_id, w.delivery_mode, w.ordering_key_path, w.delay_seconds,
               w.payload_version, w.filter, w.supersede_by_key
        -- The rules are whk.route_target_open and whk.route_payload_matches (inlined; whk.explain names
        -- which one a webhook fails).
        FROM (SELECT DISTINCT r.event_type FROM routed r) t
        JOIN whk.whk_01_webhooks w
          ON whk.event_type_matches(w.event_types, t.event_type)
         AND (p_only IS NULL OR w.id = ANY (p_only))
        JOIN whk.whk_04_assinantes a
          ON a.id = w.consumer_id
         AND whk.route_target_open(w.status, w.deleted_at, w.quarantine_stage, a.status)
    ), takers AS MATERIALIZED (
        -- Webhooks whose new deliveries may be taken now, and how many requests (in-flight cap room; a batch
        -- in flight is one request; the caller's finished ones, found by primary key, do not count: see
        -- whk.claim_deliveries). Only webhooks with no due backlog: fresh events must not overtake (or
        -- starve) deliveries already waiting for the fair claim.
        SELECT w.id, w.delivery_mode AS mode, w.batch_size,
               w.max_in_flight - (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.delivery_queue d
                                  WHERE d.webhook_id = w.id AND d.status = 'in_flight')
                               + (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.delivery_queue d
                                  WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id
                                    AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher) AS room
        FROM whk.whk_01_webhooks w
        JOIN whk.webhook_runtime rt ON rt.webhook_id = w.id
        JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id
        WHERE p_take > 0
          AND w.id IN (SELECT DISTINCT t.id FROM targets t)
          AND w.status = 'active' AND a.status = 'active'
          AND w.delivery_mode IN ('immediate', 'batch') AND w.delay_seconds = 0
          AND w.quarantined_at IS NULL
          AND w.needs_secret_since IS NULL  -- never unsigned: its deliveries wait, pending
          AND w.rate_limit_per_second IS NULL
          AND a.rate_limit_per_second IS NULL AND a.quota_deliveries_per_day IS NULL
          AND rt.breaker_state = 'closed'
          -- Quiet hours hold a consumer's non-urgent deliveries for the claim.
          AND whk.quiet_hold_until(a.quiet_hours, w.urgent, v_now) IS NULL
          -- OFFSET 0: a probe of this webhook's due index, not an anti-join that reads every due delivery of
          -- every webhook (the generic plan's choice), newest due first (see whk.claim_deliveries for both).
          AND NOT EXISTS (SELECT 1 FROM whk.delivery_queue d
                          WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                          ORDER BY d.next_attempt_at DESC
                          OFFSET 0)
        FOR UPDATE OF rt SKIP LOCKED
    ), matched AS (
        SELECT r.event_id, r.id AS outbox_id, r.created_at, r.event_type, r.commit_seq, w.id AS webhook_id,
               w.consumer_id,
               CASE WHEN w.delivery_mode = 'ordered' THEN
                   coalesce(jsonb_path_query_first(coalesce(x.body, r.payload), w.ordering_key_path,
                                                   '{}'::jsonb, true) #>> '{}',
                            r.event_key, '')
                    WHEN w.supersede_by_key THEN
                   coalesce(jsonb_path_query_first(coalesce(x.body, r.payload), w.ordering_key_path,
                                                   '{}'::jsonb, true) #>> '{}',
                            r.event_key)
               END AS ordering_key,
               x.body AS rendered, x.problem AS render_problem,
               greatest(v_now, coalesce(r.deliver_at, r.created_at) + make_interval(secs => w.delay_seconds))
                   AS due_at,
               k.room, k.mode, k.batch_size,
               k.id IS NOT NULL AND coalesce(r.deliver_at, r.created_at) <= v_now
               AND x.problem IS NULL AS takeable
        FROM routed r
        JOIN targets w ON w.event_type = r.event_type
        -- Rendered once per (event, pinned webhook); not called for an unpinned one (OFFSET 0 keeps the
        -- sub-select whole, so its WHERE is a one-time gate in front of the function).
        LEFT JOIN LATERAL (SELECT g.body, g.problem
                           FROM whk.render_event(r.payload, r.event_type, r.event_version, w.payload_version) g
                           WHERE w.payload_version IS NOT NULL
                           OFFSET 0) x ON true
        LEFT JOIN takers k ON k.id = w.id
        WHERE whk.route_payload_matches(w.filter, coalesce(x.body, r.payload), x.problem)
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
        INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, ordering_key, commit_seq, next_attempt_at, status,
                                         lease_until, claimed_by, batch_id, payload, render_problem)
        SELECT c.event_id, c.outbox_id, c.created_at, c.event_type, c.webhook_id, c.consumer_id, c.ordering_key,
               c.commit_seq, c.due_at,
               CASE WHEN c.taken THEN 'in_flight' WHEN c.render_problem IS NOT NULL THEN 'parked'
                    ELSE 'pending' END,
               CASE WHEN c.taken THEN v_lease END,
               CASE WHEN c.taken THEN p_dispatcher END,
               b.batch_id, c.rendered, c.render_problem
        FROM chosen c
        LEFT JOIN batches b ON b.webhook_id = c.webhook_id AND b.req = c.req AND c.taken
        -- No conflict check: an outbox row is routed once (picked pending under the routing lock, marked
        -- routed by this statement), so each (event, webhook) pair is inserted once.
        ORDER BY c.commit_seq, c.webhook_id
        RETURNING id, webhook_id, event_id, event_type, attempts, schedule_offset, commit_seq, ordering_key,
                  outbox_id, event_created_at, status, batch_id, payload
    ), runtime AS (
        -- Only webhooks without a runtime row: ON CONFLICT on an existing row whose last version is being
        -- written by another transaction (an outcome moving the breaker) waits for it, and while this
        -- statement holds other runtime rows (takers) that wait could close a deadlock cycle.
        -- One probe per webhook, not per delivery: DISTINCT first (the runtime row is rewritten by every
        -- claim, so each probe walks its chain of row versions).
        INSERT INTO whk.webhook_runtime (webhook_id)
        SELECT s.webhook_id FROM (SELECT DISTINCT f.webhook_id FROM fanned f) s
        WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime x WHERE x.webhook_id = s.webhook_id)
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
    -- The taken deliveries with their body: the rendered one of a pinned webhook, else rebuilt from the
    -- outbox row by its primary key (the statement's snapshot still sees the row as routing found it;
    -- whk.event_envelope is deterministic). Joining `fanned` to `matched` instead was a nested loop over two
    -- CTE scans in the generic plan (a CTE is estimated at a handful of rows): quadratic, ~280 ms of a
    -- 1,000-event round.
    SELECT (SELECT count(*) FROM routed)::integer, f.id, f.webhook_id, f.event_id, f.event_type, f.attempts,
           f.schedule_offset, f.batch_id, f.commit_seq, f.ordering_key,
           coalesce(f.payload, whk.event_envelope(o))::text
    FROM fanned f
    JOIN whk.outbox o ON o.id = f.outbox_id AND o.created_at = f.event_created_at
    WHERE f.status = 'in_flight'
    ORDER BY f.commit_seq, f.webhook_id;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    PERFORM whk.supersede_deliveries(v_ids);
    IF v_taken = 0 THEN
        v_routed := cardinality(v_ids);  -- every picked event was routed
        RETURN QUERY SELECT v_routed, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                            NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
    END IF;
END;
$$;
-- <<< sql/functions/delivery/route_and_take.sql

-- >>> sql/functions/delivery/dispatch_round.sql
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
-- <<< sql/functions/delivery/dispatch_round.sql

-- >>> sql/functions/delivery/next_wakeup.sql
-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- Quarantined webhooks and those of a consumer that is not active wait for an operator, not for time:
-- they are left out. A consumer's quiet hours push its non-urgent webhooks' time to the window's end
-- (whk.quiet_hold_until), so a dispatcher does not wake for deliveries the claim would leave waiting.
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
    RETURN (SELECT min(coalesce(whk.quiet_hold_until(a.quiet_hours, w.urgent, greatest(t.at, clock_timestamp())),
                                t.at))
    FROM whk.whk_01_webhooks w
    JOIN whk.webhook_runtime r ON r.webhook_id = w.id
    JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id AND a.status = 'active'
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS due FROM whk.delivery_queue d
        WHERE d.webhook_id = w.id AND d.status = 'pending'
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) n
    CROSS JOIN LATERAL (SELECT greatest(
               CASE WHEN w.delivery_mode = 'batch'
                    THEN n.due + make_interval(secs => w.batch_window_ms / 1000.0) ELSE n.due END,
               CASE WHEN r.breaker_state = 'open' THEN r.probe_at END,
               -- The rate clamped to its bounds, as in the claim: a denormal one overflows the division.
               CASE WHEN coalesce(w.rate_limit_per_second, 0) > 0 AND r.tokens IS NOT NULL AND r.tokens < 1
                    THEN r.tokens_at + make_interval(secs => least((1 - r.tokens)
                                                                   / least(greatest(w.rate_limit_per_second::double precision,
                                                                                    0.001), 1000000),
                                                                   86400))
               END) AS at) t
    WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL
      AND w.needs_secret_since IS NULL);
END;
$$;
-- <<< sql/functions/delivery/next_wakeup.sql

-- >>> sql/functions/delivery/explain.sql
-- whk.explain: what one ERP statement would make WHK send, without sending anything. The statement runs
-- inside a subtransaction (a BEGIN ... EXCEPTION block) that always ends by raising, so everything it did
-- is rolled back: ERP rows, outbox rows, NOTIFYs, queued jobs. Before the rollback the outbox rows its
-- capture triggers (and bindings calling whk.emit) wrote are kept in a variable; deferred triggers are made
-- to fire first (SET CONSTRAINTS ALL IMMEDIATE, undone by the rollback too) so events written at commit
-- are seen. Then every event is matched against every webhook with routing's own rules
-- (whk.event_type_matches, whk.route_target_open, whk.route_payload_matches), one row per (event, webhook):
--   routed   a delivery would be created (false: `reason` says which rule excludes it)
--   reason   why not routed, or why a routed delivery would wait or go out otherwise (parked: its body
--            cannot be rendered for the webhook's pinned major; paused, suspended consumer, waiting for a
--            signing secret, quarantined, delayed (and supersedable), the consumer's quiet hours, batched);
--            NULL = sent at once.
--            Limits the claim applies when sending (rate limits, the breaker, the in-flight cap) are not
--            evaluated: they depend on the moment, not on the event.
--   method, url, headers, body: the request of a routed delivery (the body rendered for a pinned major;
--            headers: webhook-id, webhook-timestamp
--            and the webhook's own headers; Content-Type, User-Agent and the outbound auth header, whose
--            credential is encrypted, are added by whoever sends it)
--   signature always NULL here: signing needs the webhook's secret, encrypted with a key only the
--            application holds (WHK_SECRET_KEYS). `whk explain "..."` (the CLI) fills it, building the
--            request with the dispatcher's own code.
-- An event no webhook exists for gives one row with webhook_id NULL.
--
-- Refused with a HINT, before anything runs: anything but ONE INSERT, UPDATE, DELETE or MERGE (DDL,
-- transaction control, utility commands, several statements), and a statement that reads or writes a
-- table, view or function of schema whk (directly, through a view, a rule or a sub-query). How: the
-- statement is planned (EXPLAIN (VERBOSE, FORMAT JSON), which parses but does not execute) through a
-- cursor, which PostgreSQL refuses to open on more than one statement, so `UPDATE ...; DROP ...` never
-- reaches execution; EXPLAIN accepts no DDL or transaction control; every plan must be a ModifyTable; every
-- relation or set-returning function scanned must be outside schema whk; and no whk function may be
-- called (the VERBOSE plan names functions of schemas not on the search_path, and the statement is
-- planned and run with whk removed from it; a string constant that looks like `whk.f(` is refused too).
-- What functions the statement calls do inside is not inspected: it runs, and is rolled back.
--
-- Not undone by the rollback (PostgreSQL does not roll these back): sequence values (ERP identity columns,
-- the outbox id: gaps are expected), session advisory locks and work done outside the database (dblink)
-- by functions the statement calls.
--
-- Runs with the caller's rights (no SECURITY DEFINER): the caller needs the privileges the statement needs
-- and read access to WHK's tables, i.e. a DBA. No SET search_path clause: the statement is the caller's and
-- resolves its names through the caller's search_path (minus whk); every name here is schema-qualified.
CREATE OR REPLACE FUNCTION whk.explain(statement text)
RETURNS TABLE (event_id uuid, event_type text, event_version integer, event_key text, webhook_id bigint,
               webhook_name text, consumer_id bigint, routed boolean, reason text, method text, url text,
               headers jsonb, body text, signature text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_path   text := pg_catalog.current_setting('search_path');
    v_plan   jsonb;
    v_row    record;
    v_bad    text;
    v_before bigint[];
    v_events jsonb;  -- the captured outbox rows (a whk.outbox[] variable: pglast cannot check it)
    v_ts     bigint := pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()));
    c_hint   CONSTANT text := 'whk.explain runs ONE INSERT, UPDATE, DELETE or MERGE on ERP tables, e.g. '
                              'SELECT * FROM whk.explain($q$UPDATE erp.orders SET status = ''paid'' WHERE id = 42$q$)';
BEGIN
    IF statement IS NULL OR pg_catalog.btrim(statement) = '' THEN
        RAISE EXCEPTION 'whk.explain needs a statement' USING ERRCODE = 'invalid_parameter_value', HINT = c_hint;
    END IF;
    -- Plan and run without whk on the search_path: whk objects must be named, and then they are refused.
    PERFORM pg_catalog.set_config('search_path', coalesce((
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s), ', ' ORDER BY n)
        FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS c(s, n)
        WHERE s <> 'whk'), ''), true);

    BEGIN
        FOR v_row IN EXECUTE E'EXPLAIN (VERBOSE, FORMAT JSON)\n' || statement LOOP
            v_plan := v_row."QUERY PLAN";
        END LOOP;
    EXCEPTION
        WHEN syntax_error OR invalid_cursor_definition THEN
            RAISE EXCEPTION 'whk.explain refuses this statement: %', SQLERRM
                USING ERRCODE = 'feature_not_supported', HINT = c_hint;
    END;
    SELECT pg_catalog.string_agg(DISTINCT p -> 'Plan' ->> 'Node Type', ', ') INTO v_bad
      FROM pg_catalog.jsonb_array_elements(v_plan) AS p
     WHERE p -> 'Plan' ->> 'Node Type' IS DISTINCT FROM 'ModifyTable';
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'whk.explain refuses a statement that is not an INSERT, UPDATE, DELETE or MERGE (plan: %)', v_bad
            USING ERRCODE = 'feature_not_supported', HINT = c_hint;
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT coalesce(n ->> 'Relation Name', n ->> 'Function Name'), ', ') INTO v_bad
      FROM pg_catalog.jsonb_path_query(v_plan, 'lax $.**') AS n
     WHERE pg_catalog.jsonb_typeof(n) = 'object' AND n ->> 'Schema' = 'whk';
    IF v_bad IS NULL AND v_plan::text ~ '\mwhk\.[a-z_0-9]+\(' THEN
        v_bad := pg_catalog.substring(v_plan::text, '\m(whk\.[a-z_0-9]+)\(');
    END IF;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'whk.explain refuses a statement that touches WHK''s own schema (%)', v_bad
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'explain a statement on ERP tables; WHK''s tables and functions change through its SQL '
                         'functions and API, not through whk.explain';
    END IF;

    -- Outbox rows of this transaction are told apart by txid (the top-level transaction, also inside a
    -- subtransaction) and created_at (the transaction's start, which also prunes partitions); rows the
    -- caller's transaction wrote before this call are remembered and left out.
    v_before := ARRAY(SELECT o.id FROM whk.outbox o
                      WHERE o.txid = pg_catalog.pg_current_xact_id_if_assigned() AND o.created_at = pg_catalog.now());
    BEGIN
        EXECUTE statement;
        SET CONSTRAINTS ALL IMMEDIATE;
        SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o) ORDER BY o.id) INTO v_events
          FROM whk.outbox o
         WHERE o.txid = pg_catalog.pg_current_xact_id() AND o.created_at = pg_catalog.now()
           AND o.id <> ALL (v_before);
        RAISE EXCEPTION 'whk.explain rolls back' USING ERRCODE = 'WHKRB';
    EXCEPTION
        WHEN SQLSTATE 'WHKRB' THEN
            NULL;  -- the subtransaction, and everything the statement did, is gone; v_events remains
    END;
    PERFORM pg_catalog.set_config('search_path', v_path, true);

    RETURN QUERY
    SELECT e.event_id, e.event_type, e.event_version, e.event_key, w.id, w.name, w.consumer_id,
           m.miss IS NULL,
           coalesce(m.miss, CASE
               WHEN x.problem IS NOT NULL THEN pg_catalog.format('parked: %s', x.problem)
               WHEN w.status = 'paused' THEN 'held: the webhook is paused (sent once it is resumed)'
               WHEN a.status = 'suspended' THEN 'held: the consumer is suspended (sent once it is active again)'
               WHEN w.needs_secret_since IS NOT NULL THEN 'held: the webhook waits for a signing secret'
               WHEN w.quarantined_at IS NOT NULL
                   THEN pg_catalog.format('held: the webhook is quarantined (%s): %s', w.quarantine_stage,
                                          w.quarantine_reason)
               WHEN w.delay_seconds > 0 OR e.deliver_at > pg_catalog.clock_timestamp()
                   THEN pg_catalog.format('delayed: due at %s%s', GREATEST(pg_catalog.clock_timestamp(),
                            coalesce(e.deliver_at, e.created_at) + pg_catalog.make_interval(secs => w.delay_seconds)),
                            CASE WHEN w.supersede_by_key
                                 THEN ' (a newer event of the same key before then supersedes it)' END)
               WHEN whk.quiet_hold_until(a.quiet_hours, w.urgent, pg_catalog.clock_timestamp()) IS NOT NULL
                   THEN pg_catalog.format('held: the consumer''s quiet hours, until %s',
                                          whk.quiet_hold_until(a.quiet_hours, w.urgent, pg_catalog.clock_timestamp()))
               WHEN w.delivery_mode = 'batch'
                   THEN pg_catalog.format('batched: sent in a JSON array of up to %s events (window %s ms), '
                                          'webhook-id batch_<id>', w.batch_size, w.batch_window_ms)
           END),
           CASE WHEN m.miss IS NULL THEN w.http_method END,
           CASE WHEN m.miss IS NULL THEN w.url END,
           CASE WHEN m.miss IS NULL THEN
               w.headers || pg_catalog.jsonb_build_object(
                   'webhook-id', 'msg_' || pg_catalog.replace(e.event_id::text, '-', ''),
                   'webhook-timestamp', v_ts::text)
           END,
           CASE WHEN m.miss IS NULL AND x.problem IS NULL THEN coalesce(x.body, e.envelope)::text END,
           NULL::text
    FROM (SELECT (r.o).*, whk.event_envelope(r.o) AS envelope, r.n
          FROM (SELECT pg_catalog.jsonb_populate_record(NULL::whk.outbox, j.value) AS o, j.n
                FROM pg_catalog.jsonb_array_elements(v_events) WITH ORDINALITY AS j(value, n)) r) e
    LEFT JOIN (whk.whk_01_webhooks w JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id)
           ON w.deleted_at IS NULL
    -- The body a pinned webhook would get (rendered to its major), as routing renders it.
    LEFT JOIN LATERAL (SELECT g.body, g.problem
                       FROM whk.render_event(e.envelope, e.event_type, e.event_version, w.payload_version) g
                       WHERE w.payload_version IS NOT NULL
                       OFFSET 0) x ON true
    CROSS JOIN LATERAL (SELECT CASE
        WHEN w.id IS NULL THEN 'no webhook is configured'
        WHEN NOT whk.route_target_open(w.status, w.deleted_at, w.quarantine_stage, a.status) THEN
            CASE WHEN w.status NOT IN ('active', 'paused')
                     THEN pg_catalog.format('the webhook is %s%s', w.status, ': ' || w.disabled_reason)
                 WHEN a.status NOT IN ('active', 'suspended')
                     THEN pg_catalog.format('its consumer %s is %s', a.id, a.status)
                 ELSE pg_catalog.format('the webhook is quarantined: its data broke routing (%s)',
                                        w.quarantine_reason) END
        WHEN NOT whk.event_type_matches(w.event_types, e.event_type) THEN
            pg_catalog.format('event type %s is not among its event types %s', e.event_type, w.event_types)
        WHEN NOT whk.route_payload_matches(w.filter, coalesce(x.body, e.envelope), x.problem) THEN
            pg_catalog.format('its filter %s is not true for this event', w.filter)
    END AS miss) m
    ORDER BY e.n, w.id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.explain(text) FROM PUBLIC;
COMMENT ON FUNCTION whk.explain(text) IS
    'Run one ERP INSERT/UPDATE/DELETE/MERGE in a savepoint that is always rolled back and return the events it '
    'would emit, per webhook: routed or why not, and the request (method, url, headers, body). The signature '
    'column is NULL here and filled by the CLI (whk explain) or API, which hold the key: the webhook secret is '
    'encrypted at rest. Refuses DDL, transaction control, several statements and anything touching schema whk.';
-- <<< sql/functions/delivery/explain.sql

COMMIT;
