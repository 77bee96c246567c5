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
