-- 0005 delivery: routing, fair claiming, outcomes, breakers, rate limits and the delivery SQL API.
--
-- Generated from sql/schema/500_delivery_runtime.sql and the sql/functions files it lists (identical
-- text); the dispatcher and the API call these functions. Runs as is with psql -v ON_ERROR_STOP=1 -f.
BEGIN;
SELECT whk.migration_begin(5, 'delivery');

-- Delivery runtime state shared by every dispatcher process (migration 0005): circuit breakers, token
-- buckets, fairness cursor and the indexes the claim relies on. Kept out of the seed tables because it is
-- rewritten on every claim and outcome, and must never block an API edit of the webhook row.

-- Manual and bulk retries restart the retry schedule without renumbering attempts: the schedule uses
-- attempts - schedule_offset, the attempt log keeps increasing attempt numbers.
ALTER TABLE whk.whk_03_entregas
    ADD COLUMN schedule_offset integer NOT NULL DEFAULT 0 CHECK (schedule_offset >= 0);

-- Per-webhook in-flight cap: counted on every claim of the webhook.
CREATE INDEX whk_03_entregas_in_flight_idx ON whk.whk_03_entregas (webhook_id) WHERE status = 'in_flight';
-- Ordered lanes: the head of each (webhook, key) lane is the lowest commit_seq not yet finished.
CREATE INDEX whk_03_entregas_lane_idx ON whk.whk_03_entregas (webhook_id, ordering_key, commit_seq, id)
    WHERE status IN ('pending', 'in_flight', 'awaiting_ack') AND ordering_key IS NOT NULL;
-- Parked deliveries (disabled webhook, 410) come back when the webhook is resumed.
CREATE INDEX whk_03_entregas_parked_idx ON whk.whk_03_entregas (webhook_id) WHERE status = 'parked';

CREATE TABLE whk.webhook_runtime (
    webhook_id           bigint           PRIMARY KEY REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    -- Circuit breaker (the state machine of dispatcher/breaker.py, applied in SQL so every dispatcher
    -- moves it atomically): closed -> open after failure_threshold consecutive failures; open ->
    -- half_open when probe_at passes (one probe claimed, leased until probe_until); the probe's success
    -- closes it, its failure re-opens it for twice as long (capped by open_max_s).
    breaker_state        text             NOT NULL DEFAULT 'closed'
                                          CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer          NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    -- Failed probes since the breaker last closed: each one doubles the open period (up to open_max_s).
    failed_probes        integer          NOT NULL DEFAULT 0 CHECK (failed_probes >= 0),
    opened_at            timestamptz,
    probe_at             timestamptz,
    probe_until          timestamptz,
    -- Start of the current unbroken failure streak (NULL after any success): drives auto-disable.
    failing_since        timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    -- Token bucket (requests per second); NULL tokens = a full bucket.
    tokens               double precision,
    tokens_at            timestamptz      NOT NULL DEFAULT now(),
    -- Fairness cursor: the claim serves webhooks least recently served first.
    last_claim_at        timestamptz
);
COMMENT ON TABLE whk.webhook_runtime IS
    'Per-webhook delivery state shared by all dispatchers: breaker, token bucket, failure streak, fairness.';

CREATE TABLE whk.consumer_runtime (
    consumer_id bigint           PRIMARY KEY REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    tokens      double precision,
    tokens_at   timestamptz      NOT NULL DEFAULT now(),
    -- Daily delivery quota (whk_04_assinantes.quota_deliveries_per_day), counted in requests.
    quota_day   date             NOT NULL DEFAULT current_date,
    quota_used  bigint           NOT NULL DEFAULT 0 CHECK (quota_used >= 0)
);
COMMENT ON TABLE whk.consumer_runtime IS
    'Per-consumer outbound rate limit bucket and daily quota, shared by all dispatchers.';

-- The consumer confirms a delivery that answered 202 (awaiting_ack): it becomes delivered.
-- Idempotent: acking an already delivered row returns true and changes nothing.
CREATE OR REPLACE FUNCTION whk.ack_delivery(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'delivered', acked_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    WHERE d.id = p_id AND d.status = 'awaiting_ack';
    IF FOUND THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM whk.whk_03_entregas d WHERE d.id = p_id AND d.status = 'delivered');
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
    LOOP
        IF whk.disable_webhook(v_id, format('failing without a success for %s seconds', v_window), 'whk-dispatcher') THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;

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
CREATE OR REPLACE FUNCTION whk.claim_deliveries(p_dispatcher text, p_limit integer, p_lease_s double precision)
RETURNS TABLE (delivery_id bigint, webhook_id bigint, event_id uuid, event_type text, attempts integer,
               schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
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
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now)
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

        -- In-flight cap, counted in requests (a batch in flight is one request).
        SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
        INTO v_in_flight
        FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'in_flight';
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
               k.commit_seq, k.ordering_key, o.payload::text
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

-- One global setting from whk_05_configuracoes (NULL when absent). Delivery functions read their
-- defaults through this so a DBA can change the schedule, breaker or limits with a plain UPDATE.
CREATE OR REPLACE FUNCTION whk.delivery_config(p_key text)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT value FROM whk.whk_05_configuracoes WHERE key = p_key;
$$;

-- Disable a webhook (410 Gone, auto-disable after an unbroken failure window, or an operator) and park its
-- unfinished deliveries: parked rows are kept, not lost, and come back with whk.resume_webhook.
-- Emits a `whk.webhook.disabled` event into the outbox (delivered like any other event to webhooks that
-- subscribe to it, and a durable record of who/why/when) and records the reason on the webhook row.
-- p_actor set (the dispatcher: 410, auto-disable) also writes the audit trail (whk.audit_log, created by
-- the API migration; looked up at run time so this function does not depend on it). The API passes no
-- actor: it audits the operator's request itself, in the same transaction.
-- Returns false when the webhook was already disabled (nothing changed, no duplicate event).
CREATE OR REPLACE FUNCTION whk.disable_webhook(p_webhook_id bigint, p_reason text, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_before text;
    v_parked integer;
BEGIN
    SELECT w.status INTO v_before FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id FOR UPDATE;
    UPDATE whk.whk_01_webhooks w
    SET status = 'disabled', disabled_reason = p_reason, disabled_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.status <> 'disabled'
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- In-flight rows finish their attempt; if it fails they return to pending, which a disabled webhook
    -- never claims (whk.claim_deliveries) until whk.resume_webhook.
    UPDATE whk.whk_03_entregas d
    SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    INSERT INTO whk.outbox (event_type, event_key, payload, operation)
    VALUES ('whk.webhook.disabled', p_webhook_id::text,
            jsonb_build_object(
                'type', 'whk.webhook.disabled',
                'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id,
                                           'name', v_hook.name, 'url', v_hook.url, 'reason', p_reason,
                                           'parked_deliveries', v_parked,
                                           'actor', coalesce(p_actor, current_user))),
            'EMIT');
    PERFORM whk.wake_dispatchers();

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.disabled'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('status', v_before),
              jsonb_build_object('status', 'disabled', 'disabled_reason', p_reason, 'parked_deliveries', v_parked);
    END IF;
    RETURN true;
END;
$$;

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

-- A dispatcher announces itself and proves it is alive (every few seconds). Rows of dispatchers silent
-- for longer than p_forget_after_s are removed: their deliveries are reclaimed by lease expiry anyway,
-- and a stale idle flag would make capture triggers NOTIFY for nobody.
CREATE OR REPLACE FUNCTION whk.dispatcher_heartbeat(p_id text, p_hostname text, p_pid integer, p_version text,
                                                    p_stopping boolean, p_forget_after_s double precision)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    INSERT INTO whk.dispatchers AS x (id, hostname, pid, version, stopping)
    VALUES (p_id, p_hostname, p_pid, p_version, p_stopping)
    ON CONFLICT (id) DO UPDATE
    SET heartbeat_at = now(), stopping = excluded.stopping, hostname = excluded.hostname, pid = excluded.pid,
        version = excluded.version;

    DELETE FROM whk.dispatchers d
    WHERE d.id <> p_id AND d.heartbeat_at < now() - make_interval(secs => p_forget_after_s);
END;
$$;

-- Every webhook gets its runtime row (breaker, token bucket) before the claim needs to lock it. The
-- router creates rows for webhooks it fans out to; this catches deliveries created any other way.
CREATE OR REPLACE FUNCTION whk.ensure_webhook_runtime()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT w.id FROM whk.whk_01_webhooks w
    WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime r WHERE r.webhook_id = w.id)
    ON CONFLICT (webhook_id) DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- Does an event type match a webhook's subscriptions? Patterns are exact names, '*' or a prefix wildcard
-- such as 'order.*' (matches 'order.created' and 'order.line.added', never 'order').
-- '*' means every business event: the platform's own events (system.*, whk.*) are delivered only to
-- webhooks that name them ('system.*', 'whk.webhook.disabled'), so a catch-all subscriber is not sent
-- a dispatcher restart as if it were an ERP change.
-- A plain SQL function WITHOUT a `SET search_path` clause on purpose: a SET clause prevents inlining,
-- and the routing join calls this once per (event, webhook) pair (measured: the non-inlined call was a
-- large share of route_outbox). Every name in the body is schema-qualified instead.
CREATE OR REPLACE FUNCTION whk.event_type_matches(p_patterns text[], p_type text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_type OPERATOR(pg_catalog.=) ANY (p_patterns)
        OR ('*' OPERATOR(pg_catalog.=) ANY (p_patterns)
            AND NOT pg_catalog.starts_with(p_type, 'system.') AND NOT pg_catalog.starts_with(p_type, 'whk.'))
        OR EXISTS (
            SELECT 1
            FROM pg_catalog.unnest(p_patterns) AS p(pattern)
            WHERE pg_catalog.right(p.pattern, 2) OPERATOR(pg_catalog.=) '.*'
              AND pg_catalog.starts_with(p_type, pg_catalog.left(p.pattern, -1))
        );
$$;

-- Deliveries whose consumer did not confirm (202 then no ack) before ack_deadline are retried, counting
-- the unconfirmed attempt; once the retry schedule is used up they become dead letters instead.
-- The schedule length comes from the webhook's retry_policy, else the global 'retry.policy'.
CREATE OR REPLACE FUNCTION whk.expire_acks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN 'dead' ELSE 'pending' END,
        dead_at = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN clock_timestamp() END,
        dead_reason = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len
                           THEN 'ack timeout after the last attempt' END,
        last_error = 'ack timeout',
        next_attempt_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    FROM (
        SELECT w.id,
               jsonb_array_length(coalesce(w.retry_policy -> 'schedule_s',
                                           whk.delivery_config('retry.policy') -> 'schedule_s',
                                           '[]'::jsonb)) AS schedule_len
        FROM whk.whk_01_webhooks w
    ) x
    WHERE d.status = 'awaiting_ack' AND d.ack_deadline < clock_timestamp() AND x.id = d.webhook_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- The dispatcher sleeps until then (or a wake-up, or its poll interval, whichever comes first).
CREATE OR REPLACE FUNCTION whk.next_wakeup()
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT min(greatest(
               CASE WHEN w.delivery_mode = 'batch'
                    THEN n.due + make_interval(secs => w.batch_window_ms / 1000.0) ELSE n.due END,
               CASE WHEN r.breaker_state = 'open' THEN r.probe_at END,
               CASE WHEN coalesce(w.rate_limit_per_second, 0) > 0 AND r.tokens IS NOT NULL AND r.tokens < 1
                    THEN r.tokens_at + make_interval(secs => (1 - r.tokens) / w.rate_limit_per_second::double precision)
               END))
    FROM whk.whk_01_webhooks w
    JOIN whk.webhook_runtime r ON r.webhook_id = w.id
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS due FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'pending'
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) n
    WHERE w.status = 'active' AND w.deleted_at IS NULL;
$$;

-- Deliveries whose dispatcher died (kill -9, lost host) stay in_flight until their lease passes; then any
-- dispatcher puts them back to pending, due now. The attempt that may have been on the wire is not
-- counted (its outcome was never recorded), so a receiver can see it twice: at-least-once, with the same
-- webhook-id and byte-identical body. The lease is at least 3x the attempt deadline (checked at start-up),
-- so a live dispatcher's attempt always ends, recorded, before its lease could expire.
CREATE OR REPLACE FUNCTION whk.reclaim_expired_leases()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'pending', lease_until = NULL, claimed_by = NULL, batch_id = NULL,
        next_attempt_at = least(d.next_attempt_at, clock_timestamp()), updated_at = clock_timestamp()
    WHERE d.status = 'in_flight' AND d.lease_until < clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;

    -- A half-open probe whose dispatcher died must not keep the breaker closed to probes forever.
    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until < clock_timestamp();
    RETURN v_count;
END;
$$;

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

-- Graceful shutdown: give back every delivery this dispatcher still holds (pending again, due now, the
-- attempt not counted) so other dispatchers pick them up at once instead of after the lease.
CREATE OR REPLACE FUNCTION whk.release_deliveries(p_dispatcher text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'pending', lease_until = NULL, claimed_by = NULL, batch_id = NULL,
        next_attempt_at = least(d.next_attempt_at, clock_timestamp()), updated_at = clock_timestamp()
    WHERE d.status = 'in_flight' AND d.claimed_by = p_dispatcher;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = r.webhook_id AND d.status = 'in_flight');
    RETURN v_count;
END;
$$;

-- Re-enable a disabled or paused webhook: its parked deliveries become pending again (same event_id, so
-- the same webhook-id header), its breaker closes and its failure streak restarts.
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
    SET status = 'active', disabled_reason = NULL, disabled_at = NULL, updated_at = clock_timestamp()
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

-- Manual / bulk retry: put finished or failed deliveries back in the queue now, with a fresh retry
-- schedule (schedule_offset = attempts so far) but the SAME event_id, hence the same webhook-id header:
-- receivers deduplicate replays. The signature is fresh because it is computed per attempt.
-- Rows in flight are left alone (their attempt is running). Returns how many were re-queued.
CREATE OR REPLACE FUNCTION whk.retry_deliveries(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        dead_at = NULL, dead_reason = NULL, ack_deadline = NULL, lease_until = NULL, claimed_by = NULL,
        batch_id = NULL, updated_at = clock_timestamp()
    WHERE d.id = ANY (p_ids) AND d.status IN ('dead', 'delivered', 'awaiting_ack', 'cancelled', 'pending', 'parked');
    GET DIAGNOSTICS v_count = ROW_COUNT;

    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT DISTINCT d.webhook_id FROM whk.whk_03_entregas d WHERE d.id = ANY (p_ids)
    ON CONFLICT (webhook_id) DO NOTHING;
    RETURN v_count;
END;
$$;

-- Manual retry of one delivery (see whk.retry_deliveries): true when it was re-queued.
CREATE OR REPLACE FUNCTION whk.retry_delivery(p_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    SELECT whk.retry_deliveries(ARRAY[p_id]) = 1;
$$;

-- Route up to p_limit pending outbox events: mark them routed, give each a commit_seq (the order in which
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
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_routed integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whk.route_outbox')) THEN
        RETURN 0;
    END IF;

    WITH picked AS (
        SELECT o.id, o.created_at
        FROM whk.outbox o
        WHERE o.status = 'pending'
        ORDER BY o.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), numbered AS (
        -- nextval in id order: within one visibility batch id order is the best commit-order proxy.
        SELECT s.id, s.created_at, nextval('whk.outbox_commit_seq') AS seq
        FROM (SELECT id, created_at FROM picked ORDER BY id) s
    ), checked AS (
        SELECT o.id, o.created_at,
               whk.validate_payload(o.event_type, o.event_version, o.payload) AS error
        FROM picked p
        JOIN whk.outbox o ON o.id = p.id AND o.created_at = p.created_at
        JOIN whk.whk_02_eventos e ON e.name = o.event_type AND NOT e.strict
        WHERE o.valid IS NULL
    ), routed AS (
        UPDATE whk.outbox o
        SET status = 'routed', routed_at = clock_timestamp(), commit_seq = n.seq,
            valid = CASE WHEN c.id IS NULL THEN o.valid ELSE c.error IS NULL END,
            validation_error = CASE WHEN c.id IS NULL THEN o.validation_error ELSE c.error END
        FROM numbered n
        LEFT JOIN checked c ON c.id = n.id AND c.created_at = n.created_at
        WHERE o.id = n.id AND o.created_at = n.created_at
        RETURNING o.id, o.created_at, o.event_id, o.event_type, o.event_version, o.event_key, o.payload,
                  o.deliver_at, o.commit_seq
    ), fanned AS (
        INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, ordering_key, commit_seq, next_attempt_at)
        SELECT r.event_id, r.id, r.created_at, r.event_type, w.id, w.consumer_id,
               CASE WHEN w.delivery_mode = 'ordered' THEN
                   coalesce(jsonb_path_query_first(r.payload, w.ordering_key_path, '{}'::jsonb, true) #>> '{}',
                            r.event_key, '')
               END,
               r.commit_seq,
               greatest(clock_timestamp(), coalesce(r.deliver_at, r.created_at)
                                           + make_interval(secs => w.delay_seconds))
        FROM routed r
        JOIN whk.whk_01_webhooks w
          ON w.status = 'active' AND w.deleted_at IS NULL
         AND whk.event_type_matches(w.event_types, r.event_type)
         AND (w.payload_version IS NULL OR w.payload_version = r.event_version)
         AND (w.filter IS NULL OR coalesce(r.payload @@ w.filter, false))
        ORDER BY r.commit_seq, w.id
        ON CONFLICT (event_id, webhook_id) DO NOTHING
        RETURNING webhook_id
    ), runtime AS (
        INSERT INTO whk.webhook_runtime (webhook_id)
        SELECT DISTINCT f.webhook_id FROM fanned f
        ON CONFLICT (webhook_id) DO NOTHING
    ), fired AS (
        -- Firing history in aggregate: one UPDATE per batch, never per row in the ERP transaction.
        UPDATE whk.whk_02_eventos e
        SET fire_count = e.fire_count + c.n, last_fired_at = clock_timestamp()
        FROM (SELECT event_type, count(*) AS n FROM routed GROUP BY event_type) c
        WHERE e.name = c.event_type
    )
    SELECT count(*) INTO v_routed FROM routed;

    RETURN v_routed;
END;
$$;

COMMIT;
