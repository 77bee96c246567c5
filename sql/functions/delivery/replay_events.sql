-- whk.replay_events: the outbox events a replay sends to a webhook, in (created_at, id) order after the
-- keyset position (p_after_created, p_after_id), at most p_limit (NULL: all, for counting). An event
-- qualifies when it was routed (pending events are still on their way through the router), was created in
-- [p_since, p_until), and the webhook would have received it: its subscription (event_types, filter)
-- matches, as in whk.route_and_take. p_types narrows the types (names or patterns; empty: no narrowing)
-- and p_predicate is an SQL/JSON path predicate on the envelope (`@@`, like a webhook's filter: a
-- structural mismatch is no match). ordering_key is what the router would give an ordered webhook's
-- delivery. The created_at range prunes the outbox partitions.
-- A webhook pinned to a major gets what routing gives it (whk.render_event): payload, the body rendered
-- to its major, which the filter, the predicate and the ordering-key path read; or render_problem, why it
-- cannot be rendered (the delivery is then created parked). Both NULL for an unpinned webhook.
-- The result gained payload and render_problem: the old signature is dropped, its return type differs.
DROP FUNCTION IF EXISTS whk.replay_events(bigint, timestamptz, timestamptz, text[], jsonpath, timestamptz,
                                          bigint, integer);
CREATE OR REPLACE FUNCTION whk.replay_events(p_webhook_id bigint, p_since timestamptz, p_until timestamptz,
                                             p_types text[], p_predicate jsonpath,
                                             p_after_created timestamptz DEFAULT NULL,
                                             p_after_id bigint DEFAULT NULL, p_limit integer DEFAULT NULL)
RETURNS TABLE (outbox_id bigint, created_at timestamptz, event_id uuid, event_type text, commit_seq bigint,
               ordering_key text, payload jsonb, render_problem text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT o.id, o.created_at, o.event_id, o.event_type, o.commit_seq,
           CASE WHEN w.delivery_mode = 'ordered' THEN
               coalesce(jsonb_path_query_first(coalesce(x.body, env.payload), w.ordering_key_path, '{}'::jsonb,
                                               true) #>> '{}',
                        o.event_key, '')
           END,
           x.body, x.problem
    FROM whk.whk_01_webhooks w
    JOIN whk.outbox o
      ON o.created_at >= p_since AND o.created_at < p_until
     AND o.status = 'routed'
     AND whk.event_type_matches(w.event_types, o.event_type)
     AND (cardinality(p_types) = 0 OR whk.event_type_matches(p_types, o.event_type))
     AND (p_after_created IS NULL OR (o.created_at, o.id) > (p_after_created, p_after_id))
    CROSS JOIN LATERAL (SELECT whk.event_envelope(o) AS payload OFFSET 0) env
    LEFT JOIN LATERAL (SELECT g.body, g.problem
                       FROM whk.render_event(env.payload, o.event_type, o.event_version, w.payload_version) g
                       WHERE w.payload_version IS NOT NULL
                       OFFSET 0) x ON true
    WHERE w.id = p_webhook_id
      AND (x.problem IS NOT NULL OR w.filter IS NULL
           OR coalesce(coalesce(x.body, env.payload) @@ w.filter, false))
      AND (p_predicate IS NULL OR coalesce(coalesce(x.body, env.payload) @@ p_predicate, false))
    ORDER BY o.created_at, o.id
    LIMIT p_limit
$$;
COMMENT ON FUNCTION whk.replay_events(bigint, timestamptz, timestamptz, text[], jsonpath, timestamptz, bigint, integer) IS
    'Outbox events a replay sends to a webhook (subscription, types, predicate), keyset-paged.';
