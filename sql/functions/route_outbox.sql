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
    v_now     timestamptz := clock_timestamp();
    v_ids     bigint[];
    v_created timestamptz[];
    v_routed  integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whk.route_outbox')) THEN
        RETURN 0;
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
        RETURN 0;
    END IF;

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
    ), fanned AS (
        INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, ordering_key, commit_seq, next_attempt_at)
        SELECT r.event_id, r.id, r.created_at, r.event_type, w.id, w.consumer_id,
               CASE WHEN w.delivery_mode = 'ordered' THEN
                   coalesce(jsonb_path_query_first(r.payload, w.ordering_key_path, '{}'::jsonb, true) #>> '{}',
                            r.event_key, '')
               END,
               r.commit_seq,
               greatest(v_now, coalesce(r.deliver_at, r.created_at) + make_interval(secs => w.delay_seconds))
        FROM routed r
        JOIN targets w
          ON w.event_type = r.event_type
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
        SET fire_count = e.fire_count + c.n, last_fired_at = v_now
        FROM (SELECT event_type, count(*) AS n FROM routed GROUP BY event_type) c
        WHERE e.name = c.event_type
    )
    SELECT count(*) INTO v_routed FROM routed;

    RETURN v_routed;
END;
$$;
