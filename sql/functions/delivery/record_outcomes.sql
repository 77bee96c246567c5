-- Record the outcomes of finished HTTP requests in one round trip (the dispatcher flushes them in groups).
--
-- One ATTEMPT per HTTP request, however many deliveries it carried: a batch of 1,000 events is one request,
-- so it is logged once (request/response, timing, error class) and its members point at it through
-- whk.delivery_queue.attempt_ids. Writing the same request/response 1,000 times was most of the cost of a batch.
--
-- p_attempts is a JSON array, one element per request (ix = its position, referenced by p_attempt_ix):
--   ix, webhook_id, success (bool), failure (bool: counts for the breaker; dispatcher/classify.is_failure),
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
-- A delivery whose webhook was deleted while its request ran ends cancelled unless it was delivered.
-- Rows whose lease this dispatcher lost (reclaimed by another) are left alone: the other dispatcher owns
-- them now (at-least-once, never lost); their attempt is logged all the same.
-- p_now (NULL = clock_timestamp()): the moment the outcomes are written at (breaker periods, failure streak,
-- delivered/dead times). Tests pass one instead of sleeping; the dispatcher never passes it.
-- Outputs: applied, the deliveries whose new state was written; breaker_transitions, the breakers this
-- call moved, as a JSON array of {"webhook_id", "from", "to"} (NULL when none moved), which the
-- dispatcher counts for Prometheus: returned by the same round trip instead of a query per flush.
CREATE OR REPLACE FUNCTION whk.record_outcomes(p_dispatcher text, p_attempts jsonb, p_ids bigint[],
                                               p_attempt_ix integer[], p_attempt_no integer[], p_state text[],
                                               p_next_at timestamptz[], p_ack_deadline timestamptz[],
                                               p_dead_reason text[], p_now timestamptz DEFAULT NULL,
                                               OUT applied integer, OUT breaker_transitions jsonb)
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
    v_now     timestamptz := coalesce(p_now, clock_timestamp());
    v_breaker jsonb := coalesce(whk.delivery_config('delivery.breaker'), '{}'::jsonb);
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
        -- The attempt happened whether or not we still hold the lease or another dispatcher finished the
        -- delivery meanwhile: log it either way (the attempt log has no foreign key).
        FROM attempts a
    ), deleted AS MATERIALIZED (
        -- Webhooks deleted (whk.delete_webhook) while these requests ran, one probe per webhook: their
        -- deliveries end cancelled instead of waiting for a claim that never serves them (see changes).
        SELECT w.id FROM whk.whk_01_webhooks w
        WHERE w.id IN (SELECT DISTINCT a.webhook_id FROM attempts a) AND w.deleted_at IS NOT NULL
    ), changes AS MATERIALIZED (
        -- Each delivery with its request's outcome and its row's current version, found by a primary-key
        -- probe per delivery (a LATERAL that is not flattened: no plan can drive it from the table).
        -- Of a deleted webhook only a delivered one keeps its outcome; anything else is cancelled.
        SELECT i.id, x.tid,
               CASE WHEN i.state <> 'delivered' AND a.webhook_id IN (SELECT g.id FROM deleted g)
                    THEN 'cancelled' ELSE i.state END AS state,
               i.attempt_no, i.next_attempt_at, i.ack_deadline, i.dead_reason,
               a.attempt_id, a.success, a.response_status, a.started_at,
               CASE WHEN a.success THEN NULL
                    ELSE coalesce(a.error_class || ': ' || a.error_detail, a.error_class, a.outcome) END AS error
        FROM items i
        JOIN attempts a ON a.ix = i.ix
        CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM whk.delivery_queue y WHERE y.id = i.id LIMIT 1) x
    ), agg AS (
        -- Shared breaker and failure streak, per webhook, from this group of requests. Its settings
        -- (whk/breaker.py BreakerConfig): the webhook's breaker_config member, else the global
        -- 'delivery.breaker' member, else the built-in default.
        SELECT a.webhook_id, bool_or(a.success) AS ok, count(*) FILTER (WHERE a.failure) AS fails
        FROM attempts a
        GROUP BY a.webhook_id
    ), cfg AS (
        SELECT a.webhook_id, a.ok, a.fails,
               coalesce((w.breaker_config ->> 'failure_threshold')::integer,
                        (v_breaker ->> 'failure_threshold')::integer, 5) AS threshold,
               coalesce((w.breaker_config ->> 'open_s')::double precision,
                        (v_breaker ->> 'open_s')::double precision, 60) AS open_s,
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
                    -- The exponent stops at 30: 2^30 x the 0.001 s floor of open_s is past the
                    -- 604800 s ceiling of open_max_s, and an uncapped one overflows double precision
                    -- after 1,023 failed probes.
                    THEN v_now + make_interval(secs => least(
                             c.open_s * power(2, CASE WHEN r.breaker_state = 'half_open'
                                                      THEN least(r.failed_probes + 1, 30) ELSE 0 END),
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
        RETURNING r.webhook_id, r.breaker_state, r.opened_at
    ), was AS (
        -- The breakers before this statement, for the transitions it reports.
        SELECT r.webhook_id, r.breaker_state FROM whk.webhook_runtime r
        WHERE r.webhook_id IN (SELECT a.webhook_id FROM agg a)
    ), moved AS (
        -- Opened by this statement: opened_at is set to this call's v_now only by the UPDATE that opens
        -- (a concurrent flush that finds the breaker open already keeps the older opened_at). Closed: a
        -- success on a breaker that was not closed.
        SELECT b.webhook_id, coalesce(w.breaker_state, 'closed') AS from_state, b.breaker_state AS to_state
        FROM breaker b LEFT JOIN was w ON w.webhook_id = b.webhook_id
        WHERE (b.breaker_state = 'open' AND b.opened_at = v_now)
           OR (b.breaker_state = 'closed' AND w.breaker_state IN ('open', 'half_open'))
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
           array_agg(c.started_at ORDER BY c.id), array_agg(c.error ORDER BY c.id),
           (SELECT jsonb_agg(jsonb_build_object('webhook_id', m.webhook_id, 'from', m.from_state,
                                                'to', m.to_state) ORDER BY m.webhook_id) FROM moved m)
    INTO v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error,
         breaker_transitions
    FROM changes c;

    -- The deliveries' new states, by row version (TID scans): linear whatever the statistics say. Joined by
    -- id instead, the plan depended on statistics that are whatever the last ANALYZE saw (an empty table
    -- after a truncate, nothing in flight...), and plans that drove the join from an index scanned the
    -- outcomes once per row of the table: quadratic (measured in a batch drain: 6,000 in flight x 1,000
    -- outcomes, 0.9-3.4 s per flush). With index scans off for this statement only a TID scan per
    -- outcome is left. A row updated since it was found (a lease reclaimed by another dispatcher) has a
    -- new version and fails the TID or the ownership check: it is left alone, its attempt logged all the
    -- same.
    -- Finished outcomes (delivered, cancelled) leave the live queue: the row is deleted and written once,
    -- final, into whk.delivery_history (the columns of whk.archive_deliveries' move, with this outcome's
    -- values), so the hot path never rewrites a row it is about to retire. The others (pending for a
    -- retry, awaiting an ack, dead, parked) update the live row; a dead one gets its own copy of the body
    -- (the trigger whk.dead_letter_body).
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    WITH c AS (
        SELECT * FROM unnest(v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code,
                             v_started, v_error)
               AS c(tid, state, attempt_no, next_attempt_at, ack_deadline, dead_reason, attempt_id, success,
                    response_status, started_at, error)
    ), kept AS (
        UPDATE whk.delivery_queue d
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
            ack_deadline = CASE WHEN c.state = 'awaiting_ack' THEN c.ack_deadline END,
            dead_at = CASE WHEN c.state = 'dead' THEN v_now END,
            dead_reason = CASE WHEN c.state = 'dead' THEN c.dead_reason END,
            updated_at = v_now
        FROM c
        WHERE d.ctid = c.tid AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher
          AND c.state NOT IN ('delivered', 'cancelled')
        RETURNING 1
    ), gone AS (
        DELETE FROM whk.delivery_queue d
        USING c
        WHERE d.ctid = c.tid AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher
          AND c.state IN ('delivered', 'cancelled')
        RETURNING d.*, c.state AS new_state, c.attempt_no AS new_no, c.attempt_id AS new_attempt,
                  c.success AS new_success, c.response_status AS new_code, c.started_at AS new_started,
                  c.error AS new_error
    ), moved AS (
        INSERT INTO whk.delivery_history
        SELECT g.id, g.event_id, g.outbox_id, g.event_created_at, g.event_type, g.webhook_id, g.consumer_id,
               g.new_state, g.ordering_key, g.commit_seq, greatest(g.attempts, g.new_no), g.schedule_offset,
               g.attempt_ids || g.new_attempt, g.next_attempt_at, NULL, NULL, g.batch_id, g.new_code, g.new_error,
               g.new_started, CASE WHEN g.new_success THEN v_now ELSE g.delivered_at END, NULL,
               CASE WHEN g.new_state = 'delivered' THEN v_now ELSE g.acked_at END, NULL, NULL, g.superseded_by,
               g.payload, g.render_problem, g.created_at, v_now, v_now
        FROM gone g
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM moved) INTO applied;
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
END;
$$;
