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
