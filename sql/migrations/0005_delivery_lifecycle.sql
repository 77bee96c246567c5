-- 0005 delivery_lifecycle: deliveries live in two tables: whk.delivery_queue (the old whk_03_entregas, renamed: live work and dead letters, with only the claim's and live pages' indexes) and whk.delivery_history (finished deliveries written once, partitioned by day on finished_at, dropped whole by retention); whk.whk_03_entregas becomes the read-only view over both; dead letters keep their own copy of the body; the attempt log loses its foreign key
-- Written by `whk db new-migration`: each block below is the text of the named file.
BEGIN;
SELECT whk.migration_begin(5, 'delivery_lifecycle');
-- Functions call each other in any order; their bodies are checked when first called (and by the drift test).
SET LOCAL check_function_bodies = off;

-- Deliveries split into the live queue and the partitioned history (sql/schema/150_whk_03_entregas.sql).
-- Nothing may write them meanwhile: dispatchers of this version refuse to start until the ledger says 5
-- (the schema guard), and older ones wait on this lock until the upgrade commits, then fail on the view.
LOCK TABLE whk.whk_03_entregas IN ACCESS EXCLUSIVE MODE;
-- First of all: the attempt log's foreign key, whose ON DELETE CASCADE would take the attempts of every
-- delivery moved to the history below.
ALTER TABLE whk.whk_03_entregas_tentativas DROP CONSTRAINT whk_03_entregas_tentativas_delivery_id_fkey;

-- 1. The live queue is the old table, renamed: rows, ids and the identity sequence are kept, and the
--    indexes the queue keeps are renamed rather than rebuilt. Generated names come out as in a fresh install.
ALTER TABLE whk.whk_03_entregas RENAME TO delivery_queue;
ALTER SEQUENCE whk.whk_03_entregas_id_seq RENAME TO delivery_queue_id_seq;
ALTER INDEX whk.whk_03_entregas_pkey RENAME TO delivery_queue_pkey;
ALTER TABLE whk.delivery_queue RENAME CONSTRAINT whk_03_entregas_status_check TO delivery_queue_status_check;
ALTER TABLE whk.delivery_queue RENAME CONSTRAINT whk_03_entregas_attempts_check TO delivery_queue_attempts_check;
ALTER TABLE whk.delivery_queue
    RENAME CONSTRAINT whk_03_entregas_schedule_offset_check TO delivery_queue_schedule_offset_check;
ALTER TABLE whk.delivery_queue DROP CONSTRAINT whk_03_entregas_event_webhook_key,
    DROP CONSTRAINT whk_03_entregas_webhook_consumer_fkey;
ALTER INDEX whk.whk_03_entregas_due_idx RENAME TO delivery_queue_due_idx;
ALTER INDEX whk.whk_03_entregas_lease_idx RENAME TO delivery_queue_lease_idx;
ALTER INDEX whk.whk_03_entregas_ack_idx RENAME TO delivery_queue_ack_idx;
ALTER INDEX whk.whk_03_entregas_in_flight_idx RENAME TO delivery_queue_in_flight_idx;
ALTER INDEX whk.whk_03_entregas_lane_idx RENAME TO delivery_queue_lane_idx;
ALTER INDEX whk.whk_03_entregas_parked_idx RENAME TO delivery_queue_parked_idx;
ALTER INDEX whk.whk_03_entregas_render_problem_idx RENAME TO delivery_queue_render_problem_idx;
ALTER INDEX whk.whk_03_entregas_webhook_idx RENAME TO delivery_queue_webhook_idx;
ALTER INDEX whk.whk_03_entregas_consumer_idx RENAME TO delivery_queue_consumer_idx;
ALTER INDEX whk.whk_03_entregas_dead_idx RENAME TO delivery_queue_dead_idx;
ALTER INDEX whk.whk_03_entregas_outbox_idx RENAME TO delivery_queue_outbox_idx;
ALTER INDEX whk.whk_03_entregas_consumer_dead_idx RENAME TO delivery_queue_consumer_dead_idx;
-- The API's page indexes move to the history, where the millions are.
DROP INDEX whk.whk_03_entregas_consumer_status_idx, whk.whk_03_entregas_webhook_status_idx,
           whk.whk_03_entregas_type_idx, whk.whk_03_entregas_consumer_type_idx, whk.whk_03_entregas_created_idx,
           whk.whk_03_entregas_consumer_event_idx;
COMMENT ON TABLE whk.delivery_queue IS
    'Live deliveries (pending, in flight, awaiting ack, parked, dead). webhook-id = event_id: stable across retries and replays.';
COMMENT ON COLUMN whk.delivery_queue.attempt_ids IS
    'Attempts (whk_03_entregas_tentativas.id) this delivery took part in, oldest first.';
COMMENT ON COLUMN whk.delivery_queue.payload IS
    'The body rendered for the webhook''s pinned major (with "version"), or a dead letter''s own copy; NULL = the event''s own envelope.';
COMMENT ON COLUMN whk.delivery_queue.render_problem IS
    'Why this parked delivery could not be rendered for its pinned major; released by whk.render_parked_deliveries.';

-- 2. The history: the queue's columns plus finished_at, partitioned by day.
CREATE TABLE whk.delivery_history (
    -- The queue's columns, in its order and with its NOT NULLs (no identity, defaults or checks), then
    -- finished_at: a row moves with `INSERT ... SELECT q.*, <finished_at>` (a column added to the queue
    -- later is added here too, by the same migration).
    LIKE whk.delivery_queue,
    finished_at      timestamptz NOT NULL,
    CHECK (status IN ('delivered', 'cancelled', 'superseded')),
    PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at);
COMMENT ON TABLE whk.delivery_history IS
    'Finished deliveries (delivered, cancelled, superseded), written once, partitioned by day on finished_at.';
CREATE TABLE whk.delivery_history_default PARTITION OF whk.delivery_history DEFAULT;
CREATE INDEX delivery_history_webhook_idx ON whk.delivery_history (webhook_id, id DESC);
CREATE INDEX delivery_history_consumer_idx ON whk.delivery_history (consumer_id, id DESC);
CREATE INDEX delivery_history_outbox_idx ON whk.delivery_history (outbox_id, event_created_at);
CREATE INDEX delivery_history_type_idx ON whk.delivery_history (event_type, id DESC);
CREATE INDEX delivery_history_created_idx ON whk.delivery_history (created_at, id);
CREATE INDEX delivery_history_consumer_event_idx
    ON whk.delivery_history (consumer_id, event_created_at DESC, outbox_id DESC);
CREATE OR REPLACE VIEW whk.partitions AS
SELECT i.inhparent::regclass                                                    AS parent,
       p.oid::regclass                                                          AS partition,
       n.nspname || '.' || p.relname                                            AS partition_name,
       (substring(b.bound FROM 'FROM \(''([^'']+)''\)'))::timestamptz          AS range_from,
       (substring(b.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz            AS range_to,
       b.bound = 'DEFAULT'                                                      AS is_default
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS bound) AS b
WHERE i.inhparent IN ('whk.outbox'::regclass, 'whk.whk_03_entregas_tentativas'::regclass,
                      'whk.delivery_history'::regclass);
COMMENT ON VIEW whk.partitions IS
    'Partitions of whk.outbox, whk.whk_03_entregas_tentativas and whk.delivery_history and their time ranges (see docs/delivery.md).';

-- 3. Dead letters get their own copy of the body (what the trigger whk.dead_letter_body does from now on),
--    so retention can drop their events' outbox partitions.
UPDATE whk.delivery_queue d
   SET payload = whk.event_envelope(o)
  FROM whk.outbox o
 WHERE d.status = 'dead' AND d.payload IS NULL AND o.id = d.outbox_id AND o.created_at = d.event_created_at;

-- 4. Finished deliveries move to the history, set-based, ids kept, finished_at = their last change, into
--    partitions made for them: days from the start of last month, whole months before that. One partition
--    per day for years of history would take thousands of locks in this one transaction (about 16 per
--    day), past a default server's max_locks_per_transaction; retention drops a month when all of it has
--    expired.
SELECT whk.create_partitions('whk.delivery_history',
                             since => greatest(m.oldest, date_trunc('month', (now() AT TIME ZONE 'UTC')
                                                                      - interval '1 month') AT TIME ZONE 'UTC'))
  FROM (SELECT min(d.updated_at) AS oldest FROM whk.delivery_queue d
         WHERE d.status IN ('delivered', 'cancelled', 'superseded')) m
 WHERE m.oldest IS NOT NULL;
SELECT whk.create_partitions('whk.delivery_history', period => 'month', since => m.oldest)
  FROM (SELECT min(d.updated_at) AS oldest FROM whk.delivery_queue d
         WHERE d.status IN ('delivered', 'cancelled', 'superseded')) m
 WHERE m.oldest IS NOT NULL;
WITH gone AS (
    DELETE FROM whk.delivery_queue d
     WHERE d.status IN ('delivered', 'cancelled', 'superseded')
    RETURNING d.*
)
INSERT INTO whk.delivery_history SELECT g.*, g.updated_at FROM gone g;

-- 5. The spec's deliveries relation, read-only, over both.
CREATE VIEW whk.whk_03_entregas AS
SELECT q.id, q.event_id, q.outbox_id, q.event_created_at, q.event_type, q.webhook_id, q.consumer_id, q.status,
       q.ordering_key, q.commit_seq, q.attempts, q.schedule_offset, q.attempt_ids, q.next_attempt_at,
       q.lease_until, q.claimed_by, q.batch_id, q.last_status_code, q.last_error, q.last_attempt_at,
       q.delivered_at, q.ack_deadline, q.acked_at, q.dead_at, q.dead_reason, q.superseded_by, q.payload,
       q.render_problem, q.created_at, q.updated_at, NULL::timestamptz AS finished_at
FROM whk.delivery_queue q
UNION ALL
SELECT h.id, h.event_id, h.outbox_id, h.event_created_at, h.event_type, h.webhook_id, h.consumer_id, h.status,
       h.ordering_key, h.commit_seq, h.attempts, h.schedule_offset, h.attempt_ids, h.next_attempt_at,
       h.lease_until, h.claimed_by, h.batch_id, h.last_status_code, h.last_error, h.last_attempt_at,
       h.delivered_at, h.ack_deadline, h.acked_at, h.dead_at, h.dead_reason, h.superseded_by, h.payload,
       h.render_problem, h.created_at, h.updated_at, h.finished_at
FROM whk.delivery_history h;
COMMENT ON VIEW whk.whk_03_entregas IS
    'All deliveries: whk.delivery_queue (live work, dead letters) UNION ALL whk.delivery_history (finished). '
    'One row per event x webhook; webhook-id = event_id: stable across retries and replays.';
-- Retention of finished deliveries drops history partitions now (whk.drop_partitions).
DROP FUNCTION whk.retention_delete_deliveries(integer);
-- The settings' descriptions say what retention does now: WHK's own wording, not a configuration change,
-- so not written to the audit trail (whk.audit_sql_change honours whk.audited_by).
SET LOCAL whk.audited_by = 'migration 0005';
UPDATE whk.whk_05_configuracoes SET description = 'Outbox partitions whose whole day ended longer ago are dropped (unless unfinished deliveries need them).' WHERE key = 'retention.outbox_days';
UPDATE whk.whk_05_configuracoes SET description = 'Delivery-history partitions (finished deliveries) whose whole day ended longer ago are dropped.' WHERE key = 'retention.delivered_days';
RESET whk.audited_by;





-- >>> sql/functions/delivery/ack_delivery.sql
-- The consumer confirms a delivery that answered 202 (awaiting_ack): it becomes delivered.
-- Idempotent: acking an already delivered row returns true and changes nothing. The delivery is finished
-- then: it moves to the history (whk.archive_deliveries).
CREATE OR REPLACE FUNCTION whk.ack_delivery(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.delivery_queue d
    SET status = 'delivered', acked_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    WHERE d.id = p_id AND d.status = 'awaiting_ack';
    IF FOUND THEN
        PERFORM whk.archive_deliveries(ARRAY[p_id]);
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM whk.delivery_history h WHERE h.id = p_id AND h.status = 'delivered');
END;
$$;
-- <<< sql/functions/delivery/ack_delivery.sql

-- >>> sql/functions/delivery/archive_deliveries.sql
-- whk.archive_deliveries: move the finished deliveries (delivered, cancelled, superseded) among p_ids from
-- the live queue to the append-only history, in one statement: the row is deleted from whk.delivery_queue
-- and written once into whk.delivery_history (same id, same columns, plus finished_at), so it is in
-- exactly one of the two at every moment and whk.whk_03_entregas shows it once. The functions that finish
-- deliveries off the hot path (acks, supersede, cancellation) set the final status and call this in the
-- same transaction; whk.record_outcomes, the hot path, moves its delivered and cancelled rows itself
-- without the intermediate UPDATE. Rows of p_ids that are not finished are left alone. Returns how many
-- moved.
CREATE OR REPLACE FUNCTION whk.archive_deliveries(p_ids bigint[], p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_n integer;
BEGIN
    WITH gone AS (
        DELETE FROM whk.delivery_queue d
         WHERE d.id = ANY (p_ids) AND d.status IN ('delivered', 'cancelled', 'superseded')
        RETURNING d.*
    )
    INSERT INTO whk.delivery_history
    SELECT g.*, coalesce(p_now, clock_timestamp()) FROM gone g;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.archive_deliveries(bigint[], timestamptz) IS
    'Move the finished deliveries among p_ids from whk.delivery_queue to whk.delivery_history; returns how many.';
-- <<< sql/functions/delivery/archive_deliveries.sql

-- >>> sql/functions/delivery/bulk_retry_candidates.sql
-- whk.bulk_retry_candidates: the deliveries a bulk retry still has to handle, in id order after p_after —
-- its filters (tenant, webhook, event type, statuses, created range), never one in flight (its attempt is
-- running) nor one of a deleted webhook (nothing more is sent there). The one definition used both to
-- count the total at the start and to pick each batch, so the two agree. The id order serves the keyset.
CREATE OR REPLACE FUNCTION whk.bulk_retry_candidates(p_bulk_id bigint, p_after bigint, p_limit integer)
RETURNS SETOF bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT d.id
      FROM whk.bulk_retries r
      JOIN whk.delivery_queue d
        ON (r.consumer_id IS NULL OR d.consumer_id = r.consumer_id)
       AND (r.webhook_id IS NULL OR d.webhook_id = r.webhook_id)
       AND (r.event_type IS NULL OR d.event_type = r.event_type)
       AND (r.created_from IS NULL OR d.created_at >= r.created_from)
       AND (r.created_to IS NULL OR d.created_at < r.created_to)
       AND d.status = ANY (r.statuses) AND d.status <> 'in_flight'
     WHERE r.id = p_bulk_id AND d.id > coalesce(p_after, 0)
       AND NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
     ORDER BY d.id
     LIMIT p_limit;
$$;
COMMENT ON FUNCTION whk.bulk_retry_candidates(bigint, bigint, integer) IS
    'The deliveries a bulk retry still has to handle after a delivery id (its filters), in id order.';
-- <<< sql/functions/delivery/bulk_retry_candidates.sql

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
-- Inside the consumer's quiet hours (whk.quiet_until) only its urgent webhooks are served: the others'
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
          AND EXISTS (SELECT 1 FROM whk.delivery_queue d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
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
        CONTINUE WHEN c.quiet_hours IS NOT NULL AND NOT w.urgent
                      AND whk.quiet_until(c.quiet_hours, v_now) IS NOT NULL;

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
        IF cardinality(p_finished) > 0 THEN
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

-- >>> sql/functions/delivery/clear_webhook_quarantine.sql
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
    UPDATE whk.delivery_queue d
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
-- <<< sql/functions/delivery/clear_webhook_quarantine.sql

-- >>> sql/functions/ops/create_partitions.sql
-- whk.create_partitions: make sure a time-partitioned WHK table (whk.outbox by created_at, the attempt log
-- whk.whk_03_entregas_tentativas by started_at, the delivery history by finished_at: whk.partitions) has one partition per day (or week/month)
-- from the period of `since` (default: now; the upgrade that partitions a table passes its oldest row's
-- time) up to `ahead` from now, named <table>_pYYYYMMDD after the period's first day. The
-- job worker's `housekeeping` schedule runs it hourly for each table; it is idempotent and returns the
-- partitions it created. Rows that landed in the default partition for a period (partitions created late)
-- are moved into the new partition in the same transaction, keeping their ids, so nothing is lost or
-- duplicated. Creating a partition briefly takes an ACCESS EXCLUSIVE lock on the table (inserts wait a
-- moment): creating them ahead of time keeps the default partition empty and this instantaneous.
CREATE OR REPLACE FUNCTION whk.create_partitions(p_table regclass, ahead interval DEFAULT '7 days',
                                                 period text DEFAULT 'day', since timestamptz DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_key     text;
    v_default regclass;
    v_step    interval;
    v_from    timestamptz;
    v_to      timestamptz;
    v_name    text;
    v_moved   bigint;
BEGIN
    IF period IS NULL OR period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'invalid partition period %', quote_literal(period)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use day, week or month';
    END IF;
    SELECT p.partition INTO v_default FROM whk.partitions p WHERE p.parent = p_table AND p.is_default;
    IF v_default IS NULL THEN
        RAISE EXCEPTION '% is not a time-partitioned WHK table', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use whk.outbox, whk.whk_03_entregas_tentativas or whk.delivery_history (see the view whk.partitions)';
    END IF;
    -- The partition key: the table's one range column.
    SELECT a.attname INTO v_key
      FROM pg_catalog.pg_partitioned_table t
      JOIN pg_catalog.pg_attribute a ON a.attrelid = t.partrelid AND a.attnum = t.partattrs[0]
     WHERE t.partrelid = p_table;
    v_step := ('1 ' || period)::interval;
    -- Periods are aligned in UTC so the partition bounds do not depend on the session time zone.
    v_from := date_trunc(period, least(coalesce(since, now()), now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE v_from <= now() + ahead LOOP
        v_to := ((v_from AT TIME ZONE 'UTC') + v_step) AT TIME ZONE 'UTC';
        v_name := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = p_table)
                  || '_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
        -- Skip periods already covered by any partition (whatever its name or size).
        IF NOT EXISTS (SELECT 1 FROM whk.partitions p
                        WHERE p.parent = p_table AND NOT p.is_default
                          AND p.range_from < v_to AND p.range_to > v_from) THEN
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', p_table);
            EXECUTE format('CREATE TEMP TABLE whk_partition_moving (LIKE %s) ON COMMIT DROP', p_table);
            EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= $1 AND %I < $2 RETURNING *)'
                           ' INSERT INTO whk_partition_moving SELECT * FROM moved', v_default, v_key, v_key)
                USING v_from, v_to;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            EXECUTE format('CREATE TABLE whk.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           v_name, p_table, v_from, v_to);
            IF v_moved > 0 THEN
                EXECUTE format('INSERT INTO %s OVERRIDING SYSTEM VALUE SELECT * FROM whk_partition_moving',
                               p_table);
            END IF;
            DROP TABLE whk_partition_moving;
            RETURN NEXT v_name;
        END IF;
        v_from := v_to;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) FROM PUBLIC;
-- The job worker's `housekeeping` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) TO whk_dispatcher;
COMMENT ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) IS
    'Create partitions (day/week/month) of whk.outbox, the attempt log or the delivery history up to now() + ahead; moves stray rows out of the default partition.';
-- <<< sql/functions/ops/create_partitions.sql

-- >>> sql/functions/delivery/delete_webhook.sql
-- Delete a webhook. A soft delete: the row stays, so its deliveries and attempt log keep their webhook for
-- history, but it is marked deleted (and disabled, reason 'deleted'), so routing and the claim ignore it
-- from now on. Its unfinished deliveries (pending, parked, awaiting_ack) are cancelled: nothing more is
-- sent to an endpoint its owner removed. Deliveries in flight finish their attempt and then end cancelled
-- unless it delivered them (whk.record_outcomes, whk.release_deliveries, whk.reclaim_expired_leases), and
-- whk.retry_deliveries never re-queues a deleted webhook's deliveries. Its signing secrets
-- are dropped at once (no grace period after a delete).
-- Returns deleted = false when it was deleted already (nothing changed), and how many deliveries were
-- cancelled.
CREATE OR REPLACE FUNCTION whk.delete_webhook(p_webhook_id bigint, OUT deleted boolean, OUT cancelled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_deleted_at timestamptz;
    v_ids        bigint[];
BEGIN
    SELECT w.deleted_at INTO v_deleted_at
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of an existing webhook: SELECT id, name, status FROM whk.whk_01_webhooks';
    END IF;
    deleted := v_deleted_at IS NULL;
    cancelled := 0;
    IF NOT deleted THEN
        RETURN;
    END IF;

    UPDATE whk.whk_01_webhooks w
    SET deleted_at = clock_timestamp(), status = 'disabled', disabled_reason = 'deleted',
        disabled_at = clock_timestamp(), updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id;

    -- Cancelled is final: the rows move to the history.
    WITH c AS (
        UPDATE whk.delivery_queue d
        SET status = 'cancelled', updated_at = clock_timestamp()
        WHERE d.webhook_id = p_webhook_id AND d.status IN ('pending', 'parked', 'awaiting_ack')
        RETURNING d.id
    )
    SELECT count(*)::integer, array_agg(c.id) INTO cancelled, v_ids FROM c;
    IF cancelled > 0 THEN
        PERFORM whk.archive_deliveries(v_ids);
    END IF;

    DELETE FROM whk.webhook_secrets s WHERE s.webhook_id = p_webhook_id;
END;
$$;
COMMENT ON FUNCTION whk.delete_webhook(bigint) IS
    'Soft-delete a webhook: unfinished deliveries cancelled, signing secrets dropped. Returns (deleted, cancelled).';
-- <<< sql/functions/delivery/delete_webhook.sql

-- >>> sql/functions/delivery/disable_webhook.sql
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
    UPDATE whk.delivery_queue d
    SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    -- Only the data is stored; whk.event_envelope builds the delivered body (timestamp = transaction time).
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.disabled', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id,
                               'name', v_hook.name, 'url', v_hook.url, 'reason', p_reason,
                               'parked_deliveries', v_parked,
                               'actor', coalesce(p_actor, current_user)),
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
-- <<< sql/functions/delivery/disable_webhook.sql

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
              AND wh.needs_secret_since IS NULL
              -- OFFSET 0: a probe per webhook, never a semi-join over every due delivery (whk.claim_deliveries).
              AND EXISTS (SELECT 1 FROM whk.delivery_queue d
                          WHERE d.webhook_id = wh.id AND d.status = 'pending'
                            AND d.next_attempt_at <= clock_timestamp()
                          OFFSET 0)
              -- A suspended or disabled consumer's due deliveries wait for it, not for a round (the claim
              -- skips them): counted here they would make every round ask for another at once.
              -- Likewise a consumer's non-urgent deliveries inside its quiet hours (whk.quiet_until).
              AND EXISTS (SELECT 1 FROM whk.whk_04_assinantes a
                          WHERE a.id = wh.consumer_id AND a.status = 'active'
                            AND (a.quiet_hours IS NULL OR wh.urgent
                                 OR whk.quiet_until(a.quiet_hours, clock_timestamp()) IS NULL)))
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

-- >>> sql/functions/ops/drop_partitions.sql
-- whk.drop_partitions: retention of a time-partitioned table (whk.partitions). Drops the partitions whose
-- whole period ended more than older_than ago, but only those that hold no work (whk.partition_work): an
-- outbox partition while any of its events is pending or invalid (keep_invalid) or has an unfinished
-- delivery; an attempt-log partition while it holds an attempt of an unfinished or dead-lettered delivery;
-- a delivery-history partition always goes (it only holds finished deliveries). Dead letters keep what
-- they need until they are retried or purged: their own copy of the body, and their attempts. One row per
-- old partition says what happened. The default partition is never dropped. The cost is flat: no row is
-- read or deleted one by one, whatever the partition holds.
--
-- Locks: a partition is first checked without a lock; only one that looks droppable is then locked
-- (ACCESS EXCLUSIVE on it; for the outbox also SHARE on whk.delivery_queue, so no delivery of its events
-- appears meanwhile), checked again and dropped (ACCESS EXCLUSIVE on the parent table and its default
-- partition: inserts wait for that moment). Those locks last until the caller's transaction ends, so max_drops bounds the partitions
-- dropped per call: the job worker calls it with max_drops => 1, one short transaction per partition,
-- until nothing more goes. lock_timeout (1 s) bounds how long a waiting lock holds others up behind it; a
-- busy partition is simply kept this time. A transaction reading the partition finishes first.
-- dry_run = true takes no lock and drops nothing: `dropped` then says what a real run would do. `bytes` is
-- the partition's size on disk with its indexes (pg_total_relation_size), what dropping it frees.
CREATE OR REPLACE FUNCTION whk.drop_partitions(p_table regclass,
                                               older_than interval DEFAULT '30 days',
                                               keep_invalid boolean DEFAULT true,
                                               dry_run boolean DEFAULT false,
                                               max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
DECLARE
    v_part    regclass;
    v_from    timestamptz;
    v_to      timestamptz;
    v_why     text;
    v_dropped integer := 0;
    v_what    text := CASE p_table WHEN 'whk.outbox'::regclass THEN 'events'
                                   WHEN 'whk.delivery_history'::regclass THEN 'finished deliveries'
                                   ELSE 'attempts' END;
BEGIN
    IF max_drops IS NOT NULL AND max_drops < 1 THEN
        RAISE EXCEPTION 'max_drops must be at least 1, got %', max_drops
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL drops every droppable partition';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM whk.partitions p WHERE p.parent = p_table) THEN
        RAISE EXCEPTION '% is not a time-partitioned WHK table', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use whk.outbox, whk.whk_03_entregas_tentativas or whk.delivery_history (see the view whk.partitions)';
    END IF;
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.partitions p
         WHERE p.parent = p_table AND NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        EXIT WHEN v_dropped >= max_drops;
        bytes := pg_total_relation_size(v_part);
        v_why := whk.partition_work(p_table, v_part, v_from, v_to, keep_invalid);
        IF v_why IS NULL AND NOT dry_run THEN
            BEGIN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
                IF p_table = 'whk.outbox'::regclass THEN
                    LOCK TABLE whk.delivery_queue IN SHARE MODE;
                END IF;
                v_why := whk.partition_work(p_table, v_part, v_from, v_to, keep_invalid);
                IF v_why IS NULL THEN
                    EXECUTE format('DROP TABLE %s', v_part);
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                v_why := 'busy (lock timeout), try again later';
            END;
        END IF;
        IF v_why IS NULL THEN
            dropped := true;
            reason := format(CASE WHEN dry_run THEN 'would remove %s from %s to %s'
                                  ELSE '%s from %s to %s removed' END, v_what, v_from, v_to);
            v_dropped := v_dropped + 1;
        ELSE
            dropped := false;
            reason := 'kept: ' || v_why;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it.
GRANT EXECUTE ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) IS
    'Drop old partitions of the outbox, attempt log or delivery history that hold no pending/invalid events and nothing an unfinished or dead-lettered delivery needs.';
-- <<< sql/functions/ops/drop_partitions.sql

-- >>> sql/functions/delivery/expire_acks.sql
-- Deliveries whose consumer did not confirm (202 then no ack) before ack_deadline are retried, counting
-- the unconfirmed attempt; once the retry schedule is used up they become dead letters instead.
-- The schedule is the one the dispatcher applies (whk.effective_retry_policy).
-- p_now (NULL = clock_timestamp()): tests pass a later moment instead of waiting for a deadline.
CREATE OR REPLACE FUNCTION whk.expire_acks(p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    UPDATE whk.delivery_queue d
    SET status = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN 'dead' ELSE 'pending' END,
        dead_at = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN v_now END,
        dead_reason = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len
                           THEN 'ack timeout after the last attempt' END,
        last_error = 'ack timeout',
        next_attempt_at = v_now, ack_deadline = NULL, updated_at = v_now
    FROM (
        SELECT w.id,
               jsonb_array_length(coalesce(whk.effective_retry_policy(w.retry_policy) -> 'schedule_s',
                                           '[]'::jsonb)) AS schedule_len
        FROM whk.whk_01_webhooks w
    ) x
    WHERE d.status = 'awaiting_ack' AND d.ack_deadline < v_now AND x.id = d.webhook_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/expire_acks.sql

-- >>> sql/functions/ops/kpi_rollup.sql
-- Rebuild the last p_horizon_s seconds of whk.kpi_webhook_minute from the attempt log and the dead letters,
-- and forget minutes older than 31 days (the longest SLO window is 30). Run by the worker before each
-- alert evaluation. The horizon is how late an attempt may be recorded and still be counted: the dispatcher
-- writes attempts within seconds of their start, so the default 5 minutes leaves a wide margin.
-- Reading by time goes through the BRIN index on started_at and the dead-letter index, so the cost follows
-- the traffic of the horizon, not the size of the log. Returns the number of minute rows written.
CREATE OR REPLACE FUNCTION whk.kpi_rollup(p_horizon_s integer DEFAULT 300)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_from timestamptz;
    v_rows integer;
BEGIN
    IF p_horizon_s IS NULL OR p_horizon_s NOT BETWEEN 60 AND 86400 THEN
        RAISE EXCEPTION 'kpi_rollup horizon % is out of range', p_horizon_s
            USING HINT = 'pass 60 to 86400 seconds: how far back attempts may still be recorded late';
    END IF;
    -- Two roll-ups at once would delete and insert the same minutes: the second one waits.
    PERFORM pg_advisory_xact_lock(hashtext('whk.kpi_rollup'));
    v_from := date_trunc('minute', clock_timestamp() - make_interval(secs => p_horizon_s));
    DELETE FROM whk.kpi_webhook_minute m WHERE m.minute >= v_from;
    DELETE FROM whk.kpi_webhook_minute m WHERE m.minute < clock_timestamp() - interval '31 days';
    INSERT INTO whk.kpi_webhook_minute (webhook_id, minute, consumer_id, attempts, failures, retries, dead, timed,
                                        lat_le_25, lat_le_100, lat_le_250, lat_le_500, lat_le_1000, lat_le_2500,
                                        lat_le_5000, lat_le_10000, lat_max_ms)
    SELECT webhook_id, minute, w.consumer_id,
           coalesce(a.attempts, 0), coalesce(a.failures, 0), coalesce(a.retries, 0), coalesce(k.dead, 0),
           coalesce(a.timed, 0), coalesce(a.le_25, 0), coalesce(a.le_100, 0), coalesce(a.le_250, 0),
           coalesce(a.le_500, 0), coalesce(a.le_1000, 0), coalesce(a.le_2500, 0), coalesce(a.le_5000, 0),
           coalesce(a.le_10000, 0), a.max_ms
    FROM (
        SELECT t.webhook_id, date_trunc('minute', t.started_at) AS minute,
               count(*) AS attempts,
               -- The dispatcher's failure kinds (dispatcher/breaker.py): these count against the endpoint.
               count(*) FILTER (WHERE t.outcome IN ('retry', 'throttle', 'blocked')) AS failures,
               count(*) FILTER (WHERE t.attempt_no > 1) AS retries,
               count(t.duration_ms) AS timed,
               count(*) FILTER (WHERE t.duration_ms <= 25) AS le_25,
               count(*) FILTER (WHERE t.duration_ms <= 100) AS le_100,
               count(*) FILTER (WHERE t.duration_ms <= 250) AS le_250,
               count(*) FILTER (WHERE t.duration_ms <= 500) AS le_500,
               count(*) FILTER (WHERE t.duration_ms <= 1000) AS le_1000,
               count(*) FILTER (WHERE t.duration_ms <= 2500) AS le_2500,
               count(*) FILTER (WHERE t.duration_ms <= 5000) AS le_5000,
               count(*) FILTER (WHERE t.duration_ms <= 10000) AS le_10000,
               max(t.duration_ms) AS max_ms
        FROM whk.whk_03_entregas_tentativas t
        WHERE t.started_at >= v_from
        GROUP BY 1, 2
    ) a
    FULL JOIN (
        SELECT d.webhook_id, date_trunc('minute', d.dead_at) AS minute, count(*) AS dead
        FROM whk.delivery_queue d  -- dead letters are live rows
        WHERE d.status = 'dead' AND d.dead_at >= v_from
        GROUP BY 1, 2
    ) k USING (webhook_id, minute)
    -- webhook_id and minute are the merged columns of the USING join (either side may be missing).
    JOIN whk.whk_01_webhooks w ON w.id = webhook_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END;
$$;
-- <<< sql/functions/ops/kpi_rollup.sql

-- >>> sql/functions/delivery/next_wakeup.sql
-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- Quarantined webhooks and those of a consumer that is not active wait for an operator, not for time:
-- they are left out. A consumer's quiet hours push its non-urgent webhooks' time to the window's end
-- (whk.quiet_until), so a dispatcher does not wake for deliveries the claim would leave waiting.
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
    RETURN (SELECT min(CASE WHEN a.quiet_hours IS NULL OR w.urgent THEN t.at
                            ELSE coalesce(whk.quiet_until(a.quiet_hours, greatest(t.at, clock_timestamp())), t.at)
                       END)
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

-- >>> sql/functions/ops/partition_work.sql
-- whk.partition_work: why a partition of a time-partitioned table cannot be dropped yet, or NULL when
-- nothing needs it.
-- whk.outbox: an event still pending (not routed; outbox_pending_idx), one that failed its schema check
-- (valid = false, when p_keep_invalid; read by a scan of the partition), or an unfinished delivery of one
-- of its events (whk.delivery_queue, filtered on event_created_at). The claim rebuilds a delivery's body
-- from its outbox row (whk.event_envelope), so a partition is needed while any of them may still be sent;
-- dead letters do not hold it: each keeps its own copy (the trigger whk.dead_letter_body).
-- The delivery history: nothing needs it (finished deliveries only; dead letters are live rows).
-- The attempt log: an attempt of a delivery that is unfinished or dead: the attempts are what an operator
-- reads before retrying a dead letter. Attempt ids grow with time, so only deliveries (through their
-- partial status indexes) listing an attempt id within the partition's id range are probed in the
-- partition's primary key; dead letters are looked for first, and the first hit ends the search.
-- (Attempt ids are drawn at the flush: a partition's range may overlap its neighbours' a little, and the
-- probe settles it.) An attempt whose outcome was not applied (the lease had passed to another
-- dispatcher) is logged without being listed in its delivery's attempt_ids: it does not keep a day.
CREATE OR REPLACE FUNCTION whk.partition_work(p_table regclass, p_part regclass, p_from timestamptz,
                                              p_to timestamptz, p_keep_invalid boolean)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_why   text;
    v_lo    bigint;
    v_hi    bigint;
    v_state text;
    v_found boolean;
BEGIN
    IF p_table = 'whk.delivery_history'::regclass THEN
        RETURN NULL;
    END IF;
    IF p_table = 'whk.whk_03_entregas_tentativas'::regclass THEN
        EXECUTE format('SELECT min(id), max(id) FROM %s', p_part) INTO v_lo, v_hi;
        IF v_lo IS NULL THEN
            RETURN NULL;
        END IF;
        -- Status tests spelled out as equalities, one per partial status index (a bitmap OR of them).
        FOREACH v_state IN ARRAY ARRAY['d.status = ''dead''',
                                       'd.status = ''pending'' OR d.status = ''in_flight'''
                                       ' OR d.status = ''awaiting_ack'' OR d.status = ''parked'''] LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM whk.delivery_queue d WHERE (%s)'
                           '   AND EXISTS (SELECT 1 FROM unnest(d.attempt_ids) x WHERE x BETWEEN $1 AND $2)'
                           '   AND EXISTS (SELECT 1 FROM %s a WHERE a.id = ANY (d.attempt_ids)))', v_state, p_part)
               INTO v_found USING v_lo, v_hi;
            IF v_found THEN
                RETURN CASE WHEN v_state LIKE '%dead%' THEN 'attempts of dead-lettered deliveries'
                            ELSE 'attempts of unfinished deliveries' END;
            END IF;
        END LOOP;
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %1$s WHERE status = ''pending'') THEN ''pending events'''
                   '            WHEN $1 AND EXISTS (SELECT 1 FROM %1$s WHERE valid IS FALSE) THEN ''invalid events'' END',
                   p_part)
       INTO v_why USING p_keep_invalid;
    IF v_why IS NULL THEN
        SELECT 'unfinished deliveries'
          INTO v_why
          FROM whk.delivery_queue d
         WHERE d.status IN ('pending', 'in_flight', 'awaiting_ack', 'parked')
           AND d.event_created_at >= p_from AND d.event_created_at < p_to
         LIMIT 1;
    END IF;
    RETURN v_why;
END;
$$;
COMMENT ON FUNCTION whk.partition_work(regclass, regclass, timestamptz, timestamptz, boolean) IS
    'Why a partition is still needed (outbox: pending/invalid events, unfinished deliveries; attempts: unfinished or dead deliveries), or NULL.';
-- <<< sql/functions/ops/partition_work.sql

-- >>> sql/functions/delivery/purge_dead_deliveries.sql
-- whk.purge_dead_deliveries: remove dead letters for good (the API's DELETE /deliveries/{id} and POST
-- /deliveries/purge; a DBA's psql). Only rows still dead when this runs are deleted, whatever ids are
-- passed: a delivery retried meanwhile (back to pending) or never dead is left alone, so the caller's
-- count of candidates is an upper bound and the return value is the truth. Their attempts go with them
-- (the requests that carried only this delivery; a batch request's attempt stays with its day until
-- retention drops it). Returns the ids deleted, ascending.
CREATE OR REPLACE FUNCTION whk.purge_dead_deliveries(p_ids bigint[])
RETURNS SETOF bigint
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH gone AS (
        DELETE FROM whk.delivery_queue d
         WHERE d.id = ANY (p_ids) AND d.status = 'dead'
        RETURNING d.id
    ), attempts AS (
        DELETE FROM whk.whk_03_entregas_tentativas t
         WHERE t.delivery_id IN (SELECT g.id FROM gone g) AND t.delivery_ids IS NULL
    )
    SELECT id FROM gone ORDER BY id;
$$;
COMMENT ON FUNCTION whk.purge_dead_deliveries(bigint[]) IS
    'Delete the dead letters among p_ids (others untouched), with their attempts; returns the ids deleted.';
-- <<< sql/functions/delivery/purge_dead_deliveries.sql

-- >>> sql/functions/delivery/reclaim_expired_leases.sql
-- Deliveries whose dispatcher died (kill -9, lost host) stay in_flight until their lease passes; then any
-- dispatcher puts them back to pending, due now. The attempt that may have been on the wire is not
-- counted (its outcome was never recorded), so a receiver can see it twice: at-least-once, with the same
-- webhook-id and byte-identical body. The lease is at least 3x the attempt deadline (checked at start-up),
-- so a live dispatcher's attempt always ends, recorded, before its lease could expire. Those of a webhook
-- deleted meanwhile (whk.delete_webhook) are cancelled.
-- p_now (NULL = clock_timestamp()): tests pass a later moment instead of waiting for a lease to pass.
CREATE OR REPLACE FUNCTION whk.reclaim_expired_leases(p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    -- The expired leases, through the lease index; whk.requeue_in_flight puts them back (or cancels them).
    v_count := whk.requeue_in_flight(ARRAY(SELECT d.id FROM whk.delivery_queue d
                                           WHERE d.status = 'in_flight' AND d.lease_until < v_now), v_now);

    -- A half-open probe whose dispatcher died must not keep the breaker closed to probes forever.
    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until < v_now;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/reclaim_expired_leases.sql

-- >>> sql/functions/delivery/record_outcomes.sql
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
-- <<< sql/functions/delivery/record_outcomes.sql

-- >>> sql/functions/delivery/release_deliveries.sql
-- Graceful shutdown: give back every delivery this dispatcher still holds (pending again, due now, the
-- attempt not counted) so other dispatchers pick them up at once instead of after the lease. Those of a
-- webhook deleted meanwhile (whk.delete_webhook) are cancelled.
CREATE OR REPLACE FUNCTION whk.release_deliveries(p_dispatcher text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    v_count := whk.requeue_in_flight(ARRAY(SELECT d.id FROM whk.delivery_queue d
                                           WHERE d.status = 'in_flight' AND d.claimed_by = p_dispatcher));

    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM whk.delivery_queue d
                      WHERE d.webhook_id = r.webhook_id AND d.status = 'in_flight');
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/release_deliveries.sql

-- >>> sql/functions/contracts/render_parked_deliveries.sql
-- whk.render_parked_deliveries: render again the deliveries parked because their body could not be
-- rendered for their webhook's pinned major (whk_03_entregas.render_problem), of one event type or (NULL)
-- of all. whk.register_event_transform calls it; call it yourself after fixing a transform's body with
-- CREATE OR REPLACE FUNCTION, or after re-pinning a webhook.
--
-- Each delivery rendered now, with the same rules as routing (whk.render_event, then the webhook's filter
-- on the rendered body):
-- * its webhook and consumer can receive: pending, due now (same event_id, so the same webhook-id);
-- * its webhook or consumer is disabled: stays parked as any delivery of a disabled webhook, now released
--   by whk.resume_webhook / whk.set_consumer_status like the others;
-- * the rendered body does not match the webhook's filter: cancelled, never sent (routing would not have
--   created it), with the reason kept in render_problem.
-- One that still cannot be rendered stays parked with the new reason. Returns how many were released
-- (pending, or handed over to the webhook's own parking).
CREATE OR REPLACE FUNCTION whk.render_parked_deliveries(p_event_type text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
#variable_conflict use_column
DECLARE
    v_released  integer;
    v_cancelled bigint[];
BEGIN
    WITH parked AS (
        SELECT d.id, x.body, x.problem, w.filter, coalesce(x.body, whk.event_envelope(o)) AS sent,
               w.status = 'disabled' OR a.status = 'disabled' AS held
        FROM whk.delivery_queue d
        JOIN whk.outbox o ON o.id = d.outbox_id AND o.created_at = d.event_created_at
        JOIN whk.whk_01_webhooks w ON w.id = d.webhook_id
        JOIN whk.whk_04_assinantes a ON a.id = d.consumer_id
        CROSS JOIN LATERAL whk.render_event(whk.event_envelope(o), o.event_type, o.event_version,
                                            w.payload_version) x
        WHERE d.render_problem IS NOT NULL AND d.status = 'parked'
          AND (p_event_type IS NULL OR d.event_type = p_event_type)
          AND w.deleted_at IS NULL
        FOR UPDATE OF d
    ), verdict AS (
        SELECT p.id, p.body, p.problem, p.held,
               p.problem IS NULL
               AND (p.filter IS NULL OR coalesce(p.sent @@ p.filter, false)) AS wanted
        FROM parked p
    ), changed AS (
        UPDATE whk.delivery_queue d
        SET payload = v.body,
            render_problem = CASE WHEN v.problem IS NOT NULL THEN v.problem
                                  WHEN NOT v.wanted THEN 'rendered, it does not match the webhook''s filter: not sent'
                             END,
            status = CASE WHEN v.problem IS NOT NULL OR (v.wanted AND v.held) THEN 'parked'
                          WHEN v.wanted THEN 'pending'
                          ELSE 'cancelled' END,
            next_attempt_at = clock_timestamp(), schedule_offset = d.attempts, updated_at = clock_timestamp()
        FROM verdict v
        WHERE d.id = v.id
        RETURNING d.id, d.status, d.render_problem
    )
    SELECT count(*) FILTER (WHERE c.render_problem IS NULL), array_agg(c.id) FILTER (WHERE c.status = 'cancelled')
      INTO v_released, v_cancelled FROM changed c;
    -- Cancelled (filtered out) is final: those rows move to the history.
    IF v_cancelled IS NOT NULL THEN
        PERFORM whk.archive_deliveries(v_cancelled);
    END IF;
    RETURN v_released;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.render_parked_deliveries(text) FROM PUBLIC;
COMMENT ON FUNCTION whk.render_parked_deliveries(text) IS
    'Render again deliveries parked for their pinned major (after a transform is registered or fixed); returns how many left.';
-- <<< sql/functions/contracts/render_parked_deliveries.sql

-- >>> sql/functions/delivery/reopen_deliveries.sql
-- whk.reopen_deliveries: bring delivered deliveries among p_ids back from the history into the live
-- queue, unchanged (same id, same event_id, so the same webhook-id header), for a manual retry, a bulk
-- retry or a replay (whk.retry_deliveries, which sets them pending next). The only statement that deletes
-- single rows from whk.delivery_history: an operator's retry of a few deliveries, never a mass delete.
-- Only deliveries a retry may send again come back (whk.can_send_again).
-- Returns how many came back.
CREATE OR REPLACE FUNCTION whk.reopen_deliveries(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_n integer;
BEGIN
    WITH back AS (
        DELETE FROM whk.delivery_history h
         WHERE h.id = ANY (p_ids) AND h.status = 'delivered'
           AND whk.can_send_again(h.webhook_id, h.payload, h.outbox_id, h.event_created_at)
        RETURNING h.*
    )
    INSERT INTO whk.delivery_queue
    OVERRIDING SYSTEM VALUE
    SELECT b.id, b.event_id, b.outbox_id, b.event_created_at, b.event_type, b.webhook_id, b.consumer_id, b.status,
           b.ordering_key, b.commit_seq, b.attempts, b.schedule_offset, b.attempt_ids, b.next_attempt_at,
           b.lease_until, b.claimed_by, b.batch_id, b.last_status_code, b.last_error, b.last_attempt_at,
           b.delivered_at, b.ack_deadline, b.acked_at, b.dead_at, b.dead_reason, b.superseded_by, b.payload,
           b.render_problem, b.created_at, b.updated_at
    FROM back b;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.reopen_deliveries(bigint[]) IS
    'Move delivered deliveries among p_ids from the history back to the live queue (for a retry); returns how many.';
-- <<< sql/functions/delivery/reopen_deliveries.sql

-- >>> sql/functions/delivery/replay_step.sql
-- whk.replay_step: one batch of a replay (the job worker calls it until it returns false; a DBA can too).
-- The replay row is locked for the batch, so a cancel (whk.replay_cancel) waits for the running batch and
-- the next step sees it and stops. For each of the next p_batch events (whk.replay_events after the
-- keyset position): an event the webhook never had gets a new pending delivery, due now; an event it
-- already has keeps that delivery, re-queued through whk.retry_deliveries (same row, same event_id, so the
-- same webhook-id header: the receiver can deduplicate; one being attempted right now is left alone).
-- Returns true while there may be more to do.
CREATE OR REPLACE FUNCTION whk.replay_step(p_replay_id bigint, p_batch integer DEFAULT 1000)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    r           record;
    v_n         integer;
    v_last_at   timestamptz;
    v_last_id   bigint;
    v_existing  bigint[];
    v_created   integer;
    v_requeued  integer := 0;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 events per step';
    END IF;
    SELECT * INTO r FROM whk.replays WHERE id = p_replay_id FOR UPDATE;
    IF NOT FOUND OR r.state NOT IN ('queued', 'running') THEN
        RETURN false;
    END IF;
    -- A webhook deleted meanwhile is never claimed again: its new deliveries would wait forever (and keep
    -- their outbox partitions). The replay stops there, saying why.
    IF NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = r.webhook_id AND w.deleted_at IS NULL) THEN
        UPDATE whk.replays
           SET state = 'failed', error = 'the webhook was deleted', finished_at = clock_timestamp(),
               updated_at = clock_timestamp()
         WHERE id = p_replay_id;
        RETURN false;
    END IF;
    -- One step at a time per webhook, until commit: a pair is looked for below in the queue and the
    -- history, which no unique key spans, so two replays of the webhook's events (jobs run concurrently)
    -- would both create the pairs neither sees yet. Replays of other webhooks do not wait.
    PERFORM pg_advisory_xact_lock(hashtext('whk.replay_step'), hashtext(r.webhook_id::text));
    CREATE TEMP TABLE IF NOT EXISTS whk_replay_batch (
        outbox_id bigint, created_at timestamptz, event_id uuid, event_type text, commit_seq bigint,
        ordering_key text, payload jsonb, render_problem text
    ) ON COMMIT DROP;
    TRUNCATE whk_replay_batch;
    INSERT INTO whk_replay_batch
    SELECT * FROM whk.replay_events(r.webhook_id, r.since, r.until, r.event_types, r.predicate,
                                    r.cursor_created_at, r.cursor_id, p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    SELECT b.created_at, b.outbox_id INTO v_last_at, v_last_id
      FROM whk_replay_batch b ORDER BY b.created_at DESC, b.outbox_id DESC LIMIT 1;

    -- Existing pairs, live or finished (whk.whk_03_entregas: queue and history, by their outbox indexes),
    -- leave the batch, which keeps the events the webhook never had.
    WITH known AS (
        DELETE FROM whk_replay_batch b
         USING whk.whk_03_entregas d
         WHERE d.outbox_id = b.outbox_id AND d.event_created_at = b.created_at AND d.webhook_id = r.webhook_id
        RETURNING d.id
    )
    SELECT array_agg(k.id) INTO v_existing FROM known k;
    IF v_existing IS NOT NULL THEN
        v_requeued := whk.retry_deliveries(v_existing);
    END IF;
    INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
                                     ordering_key, commit_seq, next_attempt_at, status, payload, render_problem)
    -- A pinned webhook's body as routing renders it; one that cannot be rendered waits parked, as routed.
    SELECT b.event_id, b.outbox_id, b.created_at, b.event_type, w.id, w.consumer_id, b.ordering_key,
           b.commit_seq, clock_timestamp(), CASE WHEN b.render_problem IS NULL THEN 'pending' ELSE 'parked' END,
           b.payload, b.render_problem
      FROM whk_replay_batch b
      JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
     ORDER BY b.created_at, b.outbox_id;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    IF v_created > 0 THEN
        INSERT INTO whk.webhook_runtime (webhook_id) VALUES (r.webhook_id) ON CONFLICT (webhook_id) DO NOTHING;
    END IF;
    IF v_created + v_requeued > 0 THEN
        PERFORM whk.wake_dispatchers();
    END IF;

    UPDATE whk.replays
       SET done = done + v_n, created = created + v_created, requeued = requeued + v_requeued,
           -- Events routed after the count (late commits inside the range) are sent too.
           total = greatest(total, done + v_n),
           cursor_created_at = coalesce(v_last_at, cursor_created_at),
           cursor_id = coalesce(v_last_id, cursor_id),
           state = CASE WHEN v_n < p_batch THEN 'done' ELSE 'running' END,
           finished_at = CASE WHEN v_n < p_batch THEN clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = p_replay_id;
    RETURN v_n = p_batch;
END;
$$;
COMMENT ON FUNCTION whk.replay_step(bigint, integer) IS
    'One batch of a replay: new deliveries for new pairs, existing ones re-queued (same webhook-id).';
-- <<< sql/functions/delivery/replay_step.sql

-- >>> sql/functions/delivery/resume_webhook.sql
-- Re-enable a disabled or paused webhook: its parked deliveries become pending again (same event_id, so
-- the same webhook-id header), its breaker closes, its failure streak restarts and a quarantine
-- (whk.quarantine_webhook) is lifted: resuming says "deliver again".
-- Returns the number of deliveries released from the parking lot (not those waiting for a transform).
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
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;

    UPDATE whk.webhook_runtime r
    SET breaker_state = 'closed', consecutive_failures = 0, opened_at = NULL, probe_at = NULL,
        probe_until = NULL, failing_since = NULL
    WHERE r.webhook_id = p_webhook_id;

    UPDATE whk.delivery_queue d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'parked'
      -- Not those parked for a transform: sent now they would carry the wrong major
      -- (whk.render_parked_deliveries releases them).
      AND d.render_problem IS NULL;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;
COMMENT ON FUNCTION whk.resume_webhook(bigint) IS
    'Resume a paused, disabled or quarantined webhook: parked deliveries are released (returns how many).';
-- <<< sql/functions/delivery/resume_webhook.sql

-- >>> sql/functions/ops/retention_plan.sql
-- whk.retention_plan: what a retention run would remove now, without removing anything (`whk db retention
-- --dry-run`). One row per old partition of the outbox, the attempt log and the delivery history (from
-- whk.drop_partitions in dry-run mode: its exact size on disk, and whether it would be dropped or why it
-- is kept) and one row for the table retained by batched deletes (audit_log) with the planner's estimate
-- of the rows and the bytes they take (the table's size with indexes per live row): counting exactly
-- would read the very rows retention exists to avoid reading. SECURITY DEFINER so the worker's and the
-- read-only role may see the audit trail's numbers without reading the audit trail.
CREATE OR REPLACE FUNCTION whk.retention_plan()
RETURNS TABLE (kind text, item text, horizon timestamptz, action text, est_rows bigint, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_keep_invalid constant boolean := true;
    r record;
    v_q text;
    v_plan json;
    v_per_row double precision;
BEGIN
    FOR r IN SELECT k.kind, whk.retention_horizon(k.kind) AS horizon, d.*
               FROM (VALUES ('outbox', 'whk.outbox'::regclass),
                            ('attempts', 'whk.whk_03_entregas_tentativas'::regclass),
                            ('delivered', 'whk.delivery_history'::regclass)) AS k(kind, tbl)
               CROSS JOIN LATERAL whk.drop_partitions(k.tbl, now() - whk.retention_horizon(k.kind),
                                                      v_keep_invalid, dry_run => true) AS d
    LOOP
        kind := r.kind;
        horizon := r.horizon;
        item := r.partition_name;
        action := CASE WHEN r.dropped THEN 'drop partition' ELSE r.reason END;
        est_rows := NULL;
        bytes := r.bytes;
        RETURN NEXT;
    END LOOP;
    FOR kind, item, horizon, v_q IN
        SELECT k, t, whk.retention_horizon(k),
               format(q, whk.retention_horizon(k)) AS q
          FROM (VALUES
                ('audit', 'whk.audit_log',
                 'SELECT 1 FROM whk.audit_log WHERE occurred_at < %L')) AS v(k, t, q)
    LOOP
        EXECUTE 'EXPLAIN (FORMAT JSON) ' || v_q INTO v_plan;
        est_rows := ceil((v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision);
        -- A table never analysed has reltuples -1: count it (only small, fresh tables are never analysed).
        SELECT CASE WHEN c.reltuples > 0 THEN pg_total_relation_size(c.oid) / c.reltuples::double precision END
          INTO v_per_row
          FROM pg_catalog.pg_class c WHERE c.oid = item::regclass;
        IF v_per_row IS NULL THEN
            EXECUTE format('SELECT pg_total_relation_size(%L::regclass)::double precision / greatest(count(*), 1)'
                           ' FROM %s', item, item) INTO v_per_row;
        END IF;
        action := 'batched delete';
        bytes := round(est_rows * coalesce(v_per_row, 0));
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.retention_plan() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.retention_plan() TO whk_dispatcher, whk_readonly;
COMMENT ON FUNCTION whk.retention_plan() IS
    'Dry run of retention: old outbox, attempt-log and delivery-history partitions with their sizes, estimated rows/bytes of the audit deletes.';
-- <<< sql/functions/ops/retention_plan.sql

-- >>> sql/functions/delivery/retry_dead.sql
-- The SQL control plane (docs/dba.md): put dead letters back in the queue, filtered — by webhook, consumer,
-- event type (exact, or a prefix pattern like 'order.*') and the time they died — oldest first, at most
-- max_rows of them per call (call again for more). A wrapper of whk.retry_deliveries: the same event_id, so
-- the same webhook-id header (receivers deduplicate), a fresh retry schedule. Returns how many were
-- re-queued. Bad input raises invalid_parameter_value with a HINT.
--   SELECT whk.retry_dead(webhook_id => 7, since => now() - interval '1 day');
CREATE OR REPLACE FUNCTION whk.retry_dead(
    webhook_id  bigint      DEFAULT NULL,
    consumer_id bigint      DEFAULT NULL,
    event_type  text        DEFAULT NULL,
    since       timestamptz DEFAULT NULL,
    until       timestamptz DEFAULT NULL,
    max_rows    integer     DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text;
    v_ids     bigint[];
BEGIN
    v_problem := CASE
        WHEN retry_dead.max_rows IS NULL OR retry_dead.max_rows NOT BETWEEN 1 AND 100000
            THEN 'max_rows must be between 1 and 100000'
        WHEN retry_dead.webhook_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = retry_dead.webhook_id)
            THEN format('webhook_id %s is not a webhook', retry_dead.webhook_id)
        WHEN retry_dead.consumer_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.id = retry_dead.consumer_id)
            THEN format('consumer_id %s is not a consumer', retry_dead.consumer_id)
        WHEN retry_dead.event_type IS NOT NULL
             AND retry_dead.event_type !~ '^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$'
            THEN format('event_type %L is neither a type (order.created), a prefix (order.*) nor *', retry_dead.event_type)
        WHEN retry_dead.since > retry_dead.until THEN 'since must not be after until'
    END;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.retry_dead: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Every filter is optional (NULL = any): webhook_id, consumer_id, event_type, since, until; '
                         'max_rows 1-100000. Dead letters: SELECT id, webhook_id, event_type, dead_at, dead_reason '
                         'FROM whk.delivery_queue WHERE status = ''dead''.';
    END IF;
    SELECT coalesce(array_agg(x.id), '{}') INTO v_ids
    FROM (SELECT d.id FROM whk.delivery_queue d
          WHERE d.status = 'dead'
            AND (retry_dead.webhook_id IS NULL OR d.webhook_id = retry_dead.webhook_id)
            AND (retry_dead.consumer_id IS NULL OR d.consumer_id = retry_dead.consumer_id)
            AND (retry_dead.event_type IS NULL OR whk.event_type_matches(ARRAY[retry_dead.event_type], d.event_type))
            AND (retry_dead.since IS NULL OR d.dead_at >= retry_dead.since)
            AND (retry_dead.until IS NULL OR d.dead_at < retry_dead.until)
          ORDER BY d.dead_at, d.id
          LIMIT retry_dead.max_rows) x;
    RETURN whk.retry_deliveries(v_ids);
END;
$$;
COMMENT ON FUNCTION whk.retry_dead(bigint, bigint, text, timestamptz, timestamptz, integer) IS
    'SQL control plane: re-queue dead letters matching the filters (oldest first, at most max_rows); returns how many.';
-- <<< sql/functions/delivery/retry_dead.sql

-- >>> sql/functions/delivery/retry_deliveries.sql
-- Manual / bulk retry: put finished or failed deliveries back in the queue now, with a fresh retry
-- schedule (schedule_offset = attempts so far) but the SAME event_id, hence the same webhook-id header:
-- receivers deduplicate replays. The signature is fresh because it is computed per attempt.
-- Rows in flight are left alone (their attempt is running), and so are deliveries a retry may not send
-- again (whk.can_send_again: of a deleted webhook, or with no body left) and rows parked for a missing or
-- failing transform (their body for the pinned major does not exist yet: whk.render_parked_deliveries releases
-- them). Delivered deliveries come back from the history first (whk.reopen_deliveries), same id.
-- Returns how many were re-queued; the API reports the others as skipped.
CREATE OR REPLACE FUNCTION whk.retry_deliveries(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    PERFORM whk.reopen_deliveries(p_ids);
    UPDATE whk.delivery_queue d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        dead_at = NULL, dead_reason = NULL, ack_deadline = NULL, lease_until = NULL, claimed_by = NULL,
        batch_id = NULL, updated_at = clock_timestamp()
    WHERE d.id = ANY (p_ids) AND d.status IN ('dead', 'delivered', 'awaiting_ack', 'pending', 'parked')
      AND d.render_problem IS NULL
      AND whk.can_send_again(d.webhook_id, d.payload, d.outbox_id, d.event_created_at);
    GET DIAGNOSTICS v_count = ROW_COUNT;

    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT DISTINCT d.webhook_id FROM whk.delivery_queue d WHERE d.id = ANY (p_ids)
    ON CONFLICT (webhook_id) DO NOTHING;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/retry_deliveries.sql

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
          -- Quiet hours hold a consumer's non-urgent deliveries for the claim (whk.quiet_until).
          AND (a.quiet_hours IS NULL OR w.urgent OR whk.quiet_until(a.quiet_hours, v_now) IS NULL)
          -- OFFSET 0: a probe of this webhook's due index, not an anti-join that reads every due delivery of
          -- every webhook (the generic plan's choice; see whk.claim_deliveries).
          AND NOT EXISTS (SELECT 1 FROM whk.delivery_queue d
                          WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
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

-- >>> sql/functions/delivery/set_consumer_status.sql
-- Set a consumer's status ('active' | 'suspended' | 'disabled') and move its deliveries to match: the
-- status gates delivery as well as API access, so a tenant switched off is switched off everywhere.
-- * suspended: a pause for every webhook of the consumer. Events are still routed to them and wait,
--   pending; the claim serves nothing of the consumer until it is active again; nothing is lost.
-- * disabled: like disabling each of its webhooks (whk.disable_webhook): its pending deliveries are parked
--   and new events are not routed to it. The webhook rows keep their own status.
-- * active (or suspended) after disabled: the deliveries parked for the consumer become pending, due now,
--   with a fresh retry schedule, as whk.resume_webhook does; those of a webhook that is disabled itself
--   stay parked for whk.resume_webhook, those of a deleted one are cancelled by whk.delete_webhook already.
-- Deliveries in flight finish their attempt; a failure returns them to pending, which the claim leaves
-- alone while the consumer is not active.
-- Returns changed = false when the consumer already had that status (nothing moved).
CREATE OR REPLACE FUNCTION whk.set_consumer_status(p_consumer_id bigint, p_status text, OUT changed boolean,
                                                   OUT parked integer, OUT released integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_before text;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('active', 'suspended', 'disabled') THEN
        RAISE EXCEPTION 'invalid consumer status %', coalesce(quote_literal(p_status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use one of active, suspended, disabled';
    END IF;
    SELECT a.status INTO v_before FROM whk.whk_04_assinantes a WHERE a.id = p_consumer_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no consumer %', coalesce(p_consumer_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of an existing consumer: SELECT id, name, status FROM whk.whk_04_assinantes';
    END IF;
    changed := v_before IS DISTINCT FROM p_status;
    parked := 0;
    released := 0;
    IF NOT changed THEN
        RETURN;
    END IF;

    UPDATE whk.whk_04_assinantes a SET status = p_status, updated_at = clock_timestamp()
    WHERE a.id = p_consumer_id;

    IF p_status = 'disabled' THEN
        UPDATE whk.delivery_queue d
        SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
        WHERE d.consumer_id = p_consumer_id AND d.status = 'pending';
        GET DIAGNOSTICS parked = ROW_COUNT;
    ELSIF v_before = 'disabled' THEN
        UPDATE whk.delivery_queue d
        SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
            updated_at = clock_timestamp()
        FROM whk.whk_01_webhooks w
        WHERE d.consumer_id = p_consumer_id AND d.status = 'parked' AND d.render_problem IS NULL
          AND w.id = d.webhook_id AND w.status <> 'disabled' AND w.deleted_at IS NULL;
        GET DIAGNOSTICS released = ROW_COUNT;
    END IF;
END;
$$;
COMMENT ON FUNCTION whk.set_consumer_status(bigint, text) IS
    'Set a consumer''s status; disabled parks its pending deliveries, leaving disabled releases them. Returns (changed, parked, released).';
-- <<< sql/functions/delivery/set_consumer_status.sql

-- >>> sql/functions/delivery/supersede_deliveries.sql
-- Supersede-by-key (docs/delivery.md, "Supersede by key"), run by whk.route_and_take after each routing batch
-- (p_outbox_ids: the events it routed). For every webhook with supersede_by_key (delayed mode only, see the
-- whk_01_webhooks_supersede_delayed CHECK), the newest delivery of each key among the ones just routed
-- supersedes the older deliveries of that (webhook, key) that are still pending and were never attempted:
-- they become 'superseded', a final state, with superseded_by naming the delivery that replaced them (kept,
-- not lost; visible in the API with status=superseded). The key is the delivery's ordering_key (the webhook's
-- ordering_key_path on the envelope, else the event key); a delivery without one is never superseded.
--
-- The replacement takes the earliest due time of what it replaces, so a key that keeps changing is sent at
-- most delay_seconds after its first unsent change, with the latest state: superseding never postpones.
--
-- Race with a claim: a delivery a dispatcher has claimed (in_flight, or locked by a claim that is about to
-- make it so) is never superseded. The UPDATE's status = 'pending' condition is checked again on the row's
-- latest version after waiting for the claim's lock, and a claim skips rows this statement has locked (SKIP
-- LOCKED), which after commit are superseded. A delivery that failed and waits for a retry (attempts > 0)
-- was sent once already and is left to its schedule.
--
-- Costs nothing when no webhook supersedes (one probe of a partial index); otherwise one index probe per
-- routed event (whk_03_entregas_outbox_idx) and one per key on the lane index.
CREATE OR REPLACE FUNCTION whk.supersede_deliveries(p_outbox_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_n   integer;
    v_ids bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.supersede_by_key AND w.deleted_at IS NULL) THEN
        RETURN 0;
    END IF;
    WITH fresh AS (
        SELECT DISTINCT ON (d.webhook_id, d.ordering_key) d.id, d.webhook_id, d.ordering_key, d.commit_seq
        FROM whk.whk_01_webhooks w
        JOIN whk.delivery_queue d ON d.webhook_id = w.id
        WHERE w.supersede_by_key AND w.deleted_at IS NULL
          AND d.outbox_id = ANY (p_outbox_ids) AND d.status = 'pending' AND d.ordering_key IS NOT NULL
        ORDER BY d.webhook_id, d.ordering_key, d.commit_seq DESC, d.id DESC
    ), gone AS (
        UPDATE whk.delivery_queue o
        SET status = 'superseded', superseded_by = f.id, updated_at = clock_timestamp()
        FROM fresh f
        WHERE o.webhook_id = f.webhook_id AND o.ordering_key = f.ordering_key
          AND o.status = 'pending' AND o.attempts = 0 AND o.commit_seq < f.commit_seq
        RETURNING o.id, f.id AS by_id, o.next_attempt_at
    ), moved AS (
        UPDATE whk.delivery_queue n
        SET next_attempt_at = least(n.next_attempt_at, g.first_due)
        FROM (SELECT x.by_id, min(x.next_attempt_at) AS first_due FROM gone x GROUP BY x.by_id) g
        WHERE n.id = g.by_id
    )
    SELECT count(*)::integer, array_agg(g.id) INTO v_n, v_ids FROM gone g;
    -- Superseded is final: those rows move to the history.
    IF v_n > 0 THEN
        PERFORM whk.archive_deliveries(v_ids);
    END IF;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.supersede_deliveries(bigint[]) IS
    'Supersede-by-key: mark older never-attempted pending deliveries of a key superseded by the newest one.';
-- <<< sql/functions/delivery/supersede_deliveries.sql

-- >>> sql/triggers/dead_letter_body.sql
-- A dead letter keeps its own copy of its body (whk.delivery_queue.payload), whatever made it dead (the
-- retry schedule ran out in whk.record_outcomes, an ack timed out in whk.expire_acks, a DBA's UPDATE): the
-- outbox partition of its event can then be dropped by retention under it (whk.partition_work no longer
-- counts dead letters), and a retry years later sends the same bytes. The WHEN clause is evaluated in C for
-- each updated row; the function runs only for a row that just died without a copy. Its own plan settings:
-- whk.record_outcomes switches index scans off around its UPDATE, and this lookup needs the outbox's key.
CREATE OR REPLACE FUNCTION whk.dead_letter_body()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
SET enable_indexscan = on
SET enable_bitmapscan = on
AS $$
BEGIN
    SELECT whk.event_envelope(o) INTO NEW.payload
      FROM whk.outbox o
     WHERE o.id = NEW.outbox_id AND o.created_at = NEW.event_created_at;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.dead_letter_body() IS
    'Trigger: a delivery that becomes dead without a body copy gets the event''s envelope as its payload.';

CREATE TRIGGER delivery_queue_dead_letter_body
    BEFORE UPDATE OF status ON whk.delivery_queue
    FOR EACH ROW
    WHEN (NEW.status = 'dead' AND OLD.status <> 'dead' AND NEW.payload IS NULL)
    EXECUTE FUNCTION whk.dead_letter_body();
-- <<< sql/triggers/dead_letter_body.sql

-- >>> sql/views/kpi_webhook_state.sql
-- whk.kpi_webhook_state: the current state of each webhook (not deleted): status, breaker, how long the
-- breaker has been open, the failure streak and the age of its oldest due delivery. Each figure is one
-- index probe per webhook (the due index gives the oldest pending delivery), whatever the backlog.
CREATE OR REPLACE VIEW whk.kpi_webhook_state AS
SELECT w.id AS webhook_id, w.consumer_id, w.status,
       coalesce(r.breaker_state, 'closed') AS breaker_state,
       CASE WHEN r.breaker_state = 'open'
            THEN extract(epoch FROM clock_timestamp() - r.opened_at)::double precision END AS breaker_open_s,
       coalesce(r.consecutive_failures, 0) AS consecutive_failures,
       greatest(extract(epoch FROM clock_timestamp() - p.next_attempt_at)::double precision, 0)
           AS oldest_pending_age_s
FROM whk.whk_01_webhooks w
LEFT JOIN whk.webhook_runtime r ON r.webhook_id = w.id
LEFT JOIN LATERAL (
    SELECT d.next_attempt_at FROM whk.delivery_queue d
    WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
    ORDER BY d.next_attempt_at
    LIMIT 1
) p ON true
WHERE w.deleted_at IS NULL;
COMMENT ON VIEW whk.kpi_webhook_state IS
    'Per-webhook state: status, breaker (and seconds open), failure streak, oldest due delivery age.';
-- <<< sql/views/kpi_webhook_state.sql

-- >>> sql/functions/ops/outbox_drop_partitions.sql
-- whk.outbox_drop_partitions: whk.drop_partitions for whk.outbox, the name DBAs' scripts and
-- docs/capture.md use (same arguments, same answer).
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
                                                      keep_invalid boolean DEFAULT true,
                                                      dry_run boolean DEFAULT false,
                                                      max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT * FROM whk.drop_partitions('whk.outbox'::regclass, older_than, keep_invalid, dry_run, max_drops);
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished deliveries (dead letters keep their own body).';
-- <<< sql/functions/ops/outbox_drop_partitions.sql

-- >>> sql/functions/delivery/requeue_in_flight.sql
-- whk.requeue_in_flight: put in-flight deliveries whose attempt will never be recorded back in the queue,
-- pending and due now (never later than they already were), their lease and batch cleared; one of a
-- webhook deleted meanwhile (whk.delete_webhook) is cancelled instead (nothing would ever claim it again)
-- and moves to the history. The one rule behind whk.reclaim_expired_leases (a dead dispatcher's expired
-- leases) and whk.release_deliveries (a stopping dispatcher's own rows), which choose the rows: p_ids.
-- Rows of p_ids no longer in flight (recorded meanwhile) are left alone. Returns how many were put back or
-- cancelled.
CREATE OR REPLACE FUNCTION whk.requeue_in_flight(p_ids bigint[], p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_now       timestamptz := coalesce(p_now, clock_timestamp());
    v_count     integer;
    v_cancelled bigint[];
BEGIN
    WITH u AS (
        UPDATE whk.delivery_queue d
        SET status = CASE WHEN EXISTS (SELECT 1 FROM whk.whk_01_webhooks w
                                       WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
                          THEN 'cancelled' ELSE 'pending' END,
            lease_until = NULL, claimed_by = NULL, batch_id = NULL,
            next_attempt_at = least(d.next_attempt_at, v_now), updated_at = v_now
        WHERE d.id = ANY (p_ids) AND d.status = 'in_flight'
        RETURNING d.id, d.status
    )
    SELECT count(*)::integer, array_agg(u.id) FILTER (WHERE u.status = 'cancelled') INTO v_count, v_cancelled
    FROM u;
    IF v_cancelled IS NOT NULL THEN
        PERFORM whk.archive_deliveries(v_cancelled, v_now);
    END IF;
    RETURN v_count;
END;
$$;
COMMENT ON FUNCTION whk.requeue_in_flight(bigint[], timestamptz) IS
    'Put in-flight deliveries (p_ids) back to pending, due now; those of a deleted webhook are cancelled into the history.';
-- <<< sql/functions/delivery/requeue_in_flight.sql

-- >>> sql/functions/delivery/can_send_again.sql
-- whk.can_send_again: whether a delivery may be sent again by a retry (whk.retry_deliveries, and
-- whk.reopen_deliveries before it brings a delivered one back from the history). Not for a deleted
-- webhook's delivery (whk.delete_webhook: nothing more is sent to an endpoint its owner removed, and no
-- claim would serve it), and only while its body exists: its own copy (a pinned major's rendering, a dead
-- letter's envelope) or its event in the outbox (the claim rebuilds the body from it); a delivery whose
-- outbox partition retention dropped, with no copy, cannot be sent again.
CREATE OR REPLACE FUNCTION whk.can_send_again(p_webhook_id bigint, p_payload jsonb, p_outbox_id bigint,
                                              p_event_created_at timestamptz)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id AND w.deleted_at IS NOT NULL)
           AND (p_payload IS NOT NULL
                OR EXISTS (SELECT 1 FROM whk.outbox o WHERE o.id = p_outbox_id AND o.created_at = p_event_created_at));
$$;
COMMENT ON FUNCTION whk.can_send_again(bigint, jsonb, bigint, timestamptz) IS
    'Whether a retry may send a delivery again: its webhook is not deleted and its body still exists.';
-- <<< sql/functions/delivery/can_send_again.sql

COMMIT;
