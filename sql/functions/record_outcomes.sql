-- Record the outcomes of finished HTTP attempts in one round trip (the dispatcher flushes them in groups).
--
-- p_items is a JSON array; each element describes one delivery's attempt:
--   id, webhook_id, attempt_no, state ('delivered'|'awaiting_ack'|'pending'|'dead'|'parked'),
--   next_attempt_at, ack_deadline, dead_reason, success (bool), failure (bool: counts for the breaker;
--   dispatcher/breaker.is_failure), gone (bool: the endpoint answered 410, neither success nor failure), and the attempt log fields (batch_id, started_at, duration_ms,
--   request_method, request_url, request_headers, request_body_sha256, request_body_size,
--   response_status, response_headers, response_body, response_truncated, error_class, error_detail,
--   outcome).
-- The retry decision (next_attempt_at or dead) is made by the caller's pure retry policy; this function
-- applies it, writes the attempt log, moves the shared breaker and failure-streak state, counts usage, and
-- disables webhooks that answered 410 Gone. Rows whose lease this dispatcher lost (reclaimed by another)
-- are left alone: the other dispatcher owns them now (at-least-once, never lost).
CREATE OR REPLACE FUNCTION whk.record_outcomes(p_dispatcher text, p_items jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_breaker jsonb := coalesce(whk.delivery_config('delivery.breaker'), '{}'::jsonb);
    v_applied integer;
    v_gone    bigint;
    v_ids     bigint[];
BEGIN
    -- The ids as an array first: `id = ANY(array)` walks the primary key whatever the planner thinks
    -- of jsonb_to_recordset's row count (a nested loop over every in-flight row took seconds).
    SELECT array_agg((e ->> 'id')::bigint) INTO v_ids FROM jsonb_array_elements(p_items) e;

    -- One statement: every data-modifying CTE sees the same items and runs exactly once.
    WITH items AS (
        SELECT * FROM jsonb_to_recordset(p_items) AS x(
        id bigint, webhook_id bigint, attempt_no integer, state text, next_attempt_at timestamptz,
        ack_deadline timestamptz, dead_reason text, success boolean, failure boolean, gone boolean,
        batch_id uuid, started_at timestamptz, duration_ms double precision, request_method text,
        request_url text, request_headers jsonb, request_body_sha256 text, request_body_size integer,
        response_status integer, response_headers jsonb, response_body text, response_truncated boolean,
        error_class text, error_detail text, outcome text)
    ), applied AS (
        UPDATE whk.whk_03_entregas d
        SET status = i.state,
            attempts = greatest(d.attempts, i.attempt_no),
            next_attempt_at = CASE WHEN i.state = 'pending' THEN i.next_attempt_at ELSE d.next_attempt_at END,
            lease_until = NULL,
            claimed_by = NULL,
            last_status_code = i.response_status,
            last_error = CASE WHEN i.success THEN NULL
                              ELSE coalesce(i.error_class || ': ' || i.error_detail, i.error_class, i.outcome) END,
            last_attempt_at = i.started_at,
            delivered_at = CASE WHEN i.success THEN v_now ELSE d.delivered_at END,
            acked_at = CASE WHEN i.state = 'delivered' THEN v_now ELSE d.acked_at END,
            ack_deadline = CASE WHEN i.state = 'awaiting_ack' THEN i.ack_deadline END,
            dead_at = CASE WHEN i.state = 'dead' THEN v_now END,
            dead_reason = CASE WHEN i.state = 'dead' THEN i.dead_reason END,
            updated_at = v_now
        FROM items i
        WHERE d.id = ANY (v_ids) AND d.id = i.id AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher
        RETURNING d.id
    ), logged AS (
        INSERT INTO whk.whk_03_entregas_tentativas (
            delivery_id, webhook_id, attempt_no, batch_id, dispatcher_id, started_at, duration_ms,
            request_method, request_url, request_headers, request_body_sha256, request_body_size,
            response_status, response_headers, response_body, response_truncated, error_class, error_detail,
            outcome)
        SELECT i.id, i.webhook_id, i.attempt_no, i.batch_id, p_dispatcher, coalesce(i.started_at, v_now),
               i.duration_ms, i.request_method, i.request_url, coalesce(i.request_headers, '{}'::jsonb),
               i.request_body_sha256, i.request_body_size, i.response_status, i.response_headers,
               i.response_body, coalesce(i.response_truncated, false), i.error_class, i.error_detail, i.outcome
        FROM items i
        -- The attempt happened whether or not we still hold the lease: log it either way.
        WHERE EXISTS (SELECT 1 FROM whk.whk_03_entregas d WHERE d.id = i.id)
    ), agg AS (
        -- Shared breaker and failure streak, per webhook, from this group of outcomes.
        SELECT i.webhook_id,
               bool_or(i.success) AS ok,
               count(*) FILTER (WHERE i.failure) AS fails
        FROM items i
        GROUP BY i.webhook_id
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
    ), usage AS (
        -- Consumer usage and activity, in aggregate.
        UPDATE whk.whk_04_assinantes a
        SET usage_deliveries_total = a.usage_deliveries_total + u.total,
            usage_deliveries_failed = a.usage_deliveries_failed + u.failed,
            last_activity_at = v_now
        FROM (SELECT w.consumer_id, count(*) AS total, count(*) FILTER (WHERE NOT coalesce(i.success, false)) AS failed
              FROM items i JOIN whk.whk_01_webhooks w ON w.id = i.webhook_id
              GROUP BY w.consumer_id) u
        WHERE a.id = u.consumer_id
    )
    SELECT count(*) INTO v_applied FROM applied;

    FOR v_gone IN
        SELECT DISTINCT (e ->> 'webhook_id')::bigint
        FROM jsonb_array_elements(p_items) e
        WHERE (e ->> 'gone')::boolean
    LOOP
        PERFORM whk.disable_webhook(v_gone, 'endpoint answered 410 Gone', 'whk-dispatcher');
    END LOOP;

    RETURN v_applied;
END;
$$;
