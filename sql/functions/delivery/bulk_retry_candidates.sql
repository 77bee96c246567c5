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
