-- 0010 delivery_speed: one attempt row per HTTP request, outcomes bound as arrays, routing without re-scans.
-- Why: measured on the delivery benchmark, recording a 1,000-event batch took 1.2 s (the same request/response
-- written 1,000 times, and the outcome JSON re-parsed per row) and routing re-ran payload validation for
-- every row of the batch per row. See docs/delivery.md ("Cost per delivery").
BEGIN;
SELECT whk.migration_begin(10, 'delivery_speed');

-- Attempts are logged once per HTTP request (migration 0010): a batch request carrying many deliveries is
-- one attempt row. Each delivery lists the attempts it took part in (attempt_ids, appended by
-- whk.record_outcomes in the same statement that logs the attempt); a batch attempt lists its members
-- (delivery_ids; delivery_id is the lowest member so joins on it keep working).
ALTER TABLE whk.whk_03_entregas
    ADD COLUMN attempt_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE whk.whk_03_entregas_tentativas
    ADD COLUMN delivery_ids bigint[];
COMMENT ON COLUMN whk.whk_03_entregas.attempt_ids IS
    'Attempts (whk_03_entregas_tentativas.id) this delivery took part in, oldest first.';
COMMENT ON COLUMN whk.whk_03_entregas_tentativas.delivery_ids IS
    'Members of a batch request (NULL when the request carried one delivery, delivery_id).';

-- Existing attempts: each delivery lists the attempts logged for it so far.
UPDATE whk.whk_03_entregas d
SET attempt_ids = a.ids
FROM (SELECT t.delivery_id, array_agg(t.id ORDER BY t.id) AS ids
      FROM whk.whk_03_entregas_tentativas t GROUP BY t.delivery_id) a
WHERE a.delivery_id = d.id;

-- record_outcomes takes one attempt per request plus delivery arrays now (the old signature is removed).
DROP FUNCTION whk.record_outcomes(text, jsonb);
-- dispatch_round also says whether due work is left (more_due), so idle dispatchers skip useless rounds.
DROP FUNCTION whk.dispatch_round(text, integer, integer, double precision);

-- Does an event type match a webhook's subscriptions? Patterns are exact names, '*' or a prefix wildcard
-- such as 'order.*' (matches 'order.created' and 'order.line.added', never 'order').
-- '*' means every business event: the platform's own events (system.*, whk.*) are delivered only to
-- webhooks that name them ('system.*', 'whk.webhook.disabled'), so a catch-all subscriber is not sent
-- a dispatcher restart as if it were an ERP change.
-- PL/pgSQL on purpose (migration 0010): the SQL version could not be inlined (its EXISTS is a sublink), and
-- a non-inlined SQL function is parsed and planned again in every statement that calls it (≈ 0.5 ms per
-- routing round); PL/pgSQL keeps no query plan here at all, it only evaluates expressions.
CREATE OR REPLACE FUNCTION whk.event_type_matches(p_patterns text[], p_type text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
DECLARE
    v_pattern text;
BEGIN
    IF p_type = ANY (p_patterns) THEN
        RETURN true;
    END IF;
    IF '*' = ANY (p_patterns) AND NOT starts_with(p_type, 'system.') AND NOT starts_with(p_type, 'whk.') THEN
        RETURN true;
    END IF;
    FOREACH v_pattern IN ARRAY coalesce(p_patterns, '{}') LOOP
        IF right(v_pattern, 2) = '.*' AND starts_with(p_type, left(v_pattern, -1)) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
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
AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_breaker jsonb := coalesce(whk.delivery_config('delivery.breaker'), '{}'::jsonb);
    v_applied integer;
    v_gone    bigint;
BEGIN
    -- One statement: every data-modifying CTE sees the same rows and runs exactly once.
    WITH items AS MATERIALIZED (
        SELECT * FROM unnest(p_ids, p_attempt_ix, p_attempt_no, p_state, p_next_at, p_ack_deadline, p_dead_reason)
                 AS i(id, ix, attempt_no, state, next_attempt_at, ack_deadline, dead_reason)
    ), attempts AS MATERIALIZED (
        -- Attempt ids are drawn here so the deliveries can point at their request in the same statement.
        SELECT a.*, nextval(pg_get_serial_sequence('whk.whk_03_entregas_tentativas', 'id')) AS attempt_id,
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
        WHERE EXISTS (SELECT 1 FROM whk.whk_03_entregas d WHERE d.id = a.first_id)
    ), applied AS (
        UPDATE whk.whk_03_entregas d
        SET status = i.state,
            attempts = greatest(d.attempts, i.attempt_no),
            attempt_ids = d.attempt_ids || a.attempt_id,
            next_attempt_at = CASE WHEN i.state = 'pending' THEN i.next_attempt_at ELSE d.next_attempt_at END,
            lease_until = NULL,
            claimed_by = NULL,
            last_status_code = a.response_status,
            last_error = CASE WHEN a.success THEN NULL
                              ELSE coalesce(a.error_class || ': ' || a.error_detail, a.error_class, a.outcome) END,
            last_attempt_at = a.started_at,
            delivered_at = CASE WHEN a.success THEN v_now ELSE d.delivered_at END,
            acked_at = CASE WHEN i.state = 'delivered' THEN v_now ELSE d.acked_at END,
            ack_deadline = CASE WHEN i.state = 'awaiting_ack' THEN i.ack_deadline END,
            dead_at = CASE WHEN i.state = 'dead' THEN v_now END,
            dead_reason = CASE WHEN i.state = 'dead' THEN i.dead_reason END,
            updated_at = v_now
        FROM items i
        JOIN attempts a ON a.ix = i.ix
        -- `id = ANY(array)` walks the primary key whatever the planner thinks of unnest's row count.
        WHERE d.id = ANY (p_ids) AND d.id = i.id AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher
        RETURNING d.id
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
    SELECT count(*) INTO v_applied FROM applied;

    FOR v_gone IN
        SELECT DISTINCT (e ->> 'webhook_id')::bigint
        FROM jsonb_array_elements(p_attempts) e
        WHERE (e ->> 'gone')::boolean
    LOOP
        PERFORM whk.disable_webhook(v_gone, 'endpoint answered 410 Gone', 'whk-dispatcher');
    END LOOP;

    RETURN v_applied;
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
CREATE OR REPLACE FUNCTION whk.route_and_take(p_limit integer, p_dispatcher text, p_take integer,
                                              p_lease_s double precision)
RETURNS TABLE (routed integer, delivery_id bigint, webhook_id bigint, event_id uuid, event_type text,
               attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text,
               payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
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
        LEFT JOIN LATERAL (
            SELECT true AS checked, whk.validate_payload(src.event_type, src.event_version, src.payload) AS error
            FROM whk.whk_02_eventos e
            WHERE e.name = src.event_type AND NOT e.strict AND src.valid IS NULL
        ) v ON true
        WHERE o.id = n.id AND o.created_at = n.created_at
        RETURNING o.id, o.created_at, o.event_id, o.event_type, o.event_version, o.event_key, o.payload,
                  o.deliver_at, o.commit_seq
    ), targets AS (
        -- Subscriptions are matched once per (event type, webhook), not per event: a batch holds few types.
        SELECT t.event_type, w.id, w.consumer_id, w.delivery_mode, w.ordering_key_path, w.delay_seconds,
               w.payload_version, w.filter
        FROM (SELECT DISTINCT r.event_type FROM routed r) t
        JOIN whk.whk_01_webhooks w
          ON w.status = 'active' AND w.deleted_at IS NULL AND whk.event_type_matches(w.event_types, t.event_type)
    ), takers AS MATERIALIZED (
        -- Webhooks whose new deliveries may be taken now, and how many requests (in-flight cap room; a batch
        -- in flight is one request). Only webhooks with no due backlog: fresh events must not overtake (or
        -- starve) deliveries already waiting for the fair claim.
        SELECT w.id, w.delivery_mode AS mode, w.batch_size,
               w.max_in_flight - (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.whk_03_entregas d
                                  WHERE d.webhook_id = w.id AND d.status = 'in_flight') AS room
        FROM whk.whk_01_webhooks w
        JOIN whk.webhook_runtime rt ON rt.webhook_id = w.id
        JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id
        WHERE p_take > 0
          AND w.id IN (SELECT DISTINCT t.id FROM targets t)
          AND w.delivery_mode IN ('immediate', 'batch') AND w.delay_seconds = 0
          AND w.rate_limit_per_second IS NULL
          AND a.rate_limit_per_second IS NULL AND a.quota_deliveries_per_day IS NULL
          AND rt.breaker_state = 'closed'
          AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                          WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now)
        FOR UPDATE OF rt SKIP LOCKED
    ), matched AS (
        SELECT r.event_id, r.id AS outbox_id, r.created_at, r.event_type, r.commit_seq, r.payload, w.id AS webhook_id,
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
    SELECT (SELECT count(*) FROM routed)::integer, f.id, f.webhook_id, f.event_id, f.event_type, f.attempts,
           f.schedule_offset, f.batch_id, f.commit_seq, f.ordering_key, m.payload::text
    FROM fanned f
    JOIN matched m ON m.outbox_id = f.outbox_id AND m.created_at = f.event_created_at AND m.webhook_id = f.webhook_id
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

-- Route up to p_limit pending outbox events (whk.route_and_take with nothing taken; returns the count): mark them routed, give each a commit_seq (the order in which
-- they became visible, which is commit order across transactions) and fan them out to every matching
-- active webhook in ONE set-based INSERT. Events nobody subscribes to are routed too and kept for replay.
--
-- Claimed by status, never by an id watermark: ids are taken before commit, so a low id can become
-- visible after higher ones; a watermark would skip it forever. Routing runs under a transaction-level
-- advisory lock so commit_seq is monotonic across dispatchers (a second router returns 0 at once and
-- goes on delivering; the lock is held for one short statement batch).
--
-- Filters are SQL/JSON path predicates stored as the jsonpath type (validated by PostgreSQL on write);
-- `@@` yields NULL rather than an error on structural mismatches, which counts as "no match".
-- Non-strict schema validation: events of registered, non-strict types are checked here with
-- whk.validate_payload (capture) and flagged (outbox.valid / validation_error) but still delivered;
-- strict types were validated when emitted (valid = true already); unregistered types stay NULL.
CREATE OR REPLACE FUNCTION whk.route_outbox(p_limit integer)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    SELECT coalesce(max(r.routed), 0)::integer FROM whk.route_and_take(p_limit, NULL, 0, 0) r;
$$;

-- whk.validate_payload: check an event body (the envelope stored in whk.outbox.payload) against the
-- schema of its type and major version. NULL = valid, else '<JSON pointer>: <what is wrong>'.
-- The router calls it for non-strict types and stores the answer in outbox.valid / validation_error;
-- whk.emit calls it for strict types before writing anything. version NULL = the type's current major;
-- the latest minor of that major is used (minors are backward compatible by construction).
CREATE OR REPLACE FUNCTION whk.validate_payload(event_type text, version integer, payload jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type    text := validate_payload.event_type;
    p_version integer := validate_payload.version;
    v_schema  jsonb;
    v_major   integer;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RETURN '/: expected the envelope object {"type", "timestamp", "data"}';
    END IF;
    IF payload -> 'type' IS DISTINCT FROM to_jsonb(p_type) THEN
        RETURN format('/type: expected "%s", got %s', p_type, coalesce((payload -> 'type')::text, 'nothing'));
    END IF;
    IF jsonb_typeof(payload -> 'timestamp') IS DISTINCT FROM 'string' THEN
        RETURN '/timestamp: expected an ISO 8601 string';
    END IF;
    IF NOT payload ? 'data' THEN
        RETURN '/: required property "data" is missing';
    END IF;

    SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RETURN format('/type: unknown event type "%s"', p_type);
    END IF;
    SELECT v.schema INTO v_schema
      FROM whk.whk_02_eventos_versoes v
      JOIN whk.whk_02_eventos e ON e.id = v.event_type_id
     WHERE e.name = p_type AND v.major = coalesce(p_version, v_major)
     ORDER BY v.minor DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN format('/type: "%s" has no version %s', p_type, coalesce(p_version, v_major));
    END IF;
    RETURN whk.jsonschema_error(v_schema, payload -> 'data', '/data');
END;
$$;
COMMENT ON FUNCTION whk.validate_payload(text, integer, jsonb) IS
    'NULL when an event envelope matches the schema of its type/major, else the first error (JSON pointer: message).';

-- One dispatcher round trip: route new outbox events (whk.route_and_take, which may hand fresh deliveries
-- over already in flight) and claim due deliveries
-- (whk.claim_deliveries) in the same transaction, so an event committed a moment ago is routed and
-- claimed by one call (commit -> request in one round trip). Returns the claimed rows, each carrying
-- the number of events routed and `more_due`: whether due deliveries are still waiting after the claim
-- (held back by caps, lanes, rate limits or the caller's free slots). When nothing is due, a freed slot or
-- a recorded outcome cannot make anything claimable, so the dispatcher does not spend a round on it.
-- The last row carries only `routed` and `more_due` (no delivery).
CREATE OR REPLACE FUNCTION whk.dispatch_round(p_dispatcher text, p_route_limit integer, p_claim_limit integer,
                                              p_lease_s double precision)
RETURNS TABLE (routed integer, more_due boolean, delivery_id bigint, webhook_id bigint, event_id uuid,
               event_type text, attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint,
               ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_routed integer := 0;
    v_taken  integer := 0;  -- requests taken: a batch is one
    v_seen   uuid[] := '{}';
    v_more   boolean;
    t        record;
BEGIN
    -- Fresh deliveries of unconstrained immediate webhooks come back already in flight (whk.route_and_take).
    FOR t IN SELECT * FROM whk.route_and_take(p_route_limit, p_dispatcher, p_claim_limit, p_lease_s) LOOP
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

    RETURN QUERY
    SELECT v_routed, NULL::boolean, c.delivery_id, c.webhook_id, c.event_id, c.event_type, c.attempts,
           c.schedule_offset, c.batch_id, c.commit_seq, c.ordering_key, c.payload
    FROM whk.claim_deliveries(p_dispatcher, p_claim_limit - v_taken, p_lease_s) c;
    -- One probe of each active webhook's due index (the claim's own index).
    SELECT EXISTS (
        SELECT 1 FROM whk.whk_01_webhooks wh
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()))
    INTO v_more;
    -- The flag travels on its own row (no delivery): a client reads it from the row without delivery_id.
    RETURN QUERY SELECT v_routed, v_more, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                        NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
END;
$$;

COMMIT;
