-- Analytics export (whk/export.py is the only caller): history in keyset pages, oldest first.
-- %(tenant)s is NULL for admins and the CLI, else a consumer id: a consumer exports only its own rows,
-- exactly as it sees them in the delivery and event pages of the API.

-- name: deliveries_page :many
-- Keyset on the primary key; latency_ms: event committed -> delivered.
SELECT d.id, d.event_id::text AS event_id, d.event_type, d.webhook_id, d.consumer_id, d.status, d.attempts,
       d.last_status_code, d.last_error, d.dead_reason, d.event_created_at, d.created_at, d.last_attempt_at,
       d.delivered_at, d.dead_at,
       extract(epoch FROM d.delivered_at - d.event_created_at)::double precision * 1000.0 AS latency_ms
FROM whk.whk_03_entregas d
WHERE d.id > %(after_id)s
  AND d.created_at >= %(since)s AND d.created_at < %(until)s
  AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
ORDER BY d.id
LIMIT %(limit)s

-- name: deliveries_count :one
SELECT count(*)
FROM whk.whk_03_entregas d
WHERE d.created_at >= %(since)s AND d.created_at < %(until)s
  AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)

-- name: events_page :many
-- Keyset on (created_at, id): the outbox is partitioned by created_at, so each page reads the partitions
-- from the cursor on. A consumer exports the events that were routed to its webhooks.
SELECT o.id, o.event_id::text AS event_id, o.event_type, o.event_version, o.event_key, o.operation,
       o.source_table, o.status, o.valid, o.validation_error, o.created_at, o.routed_at,
       whk.event_envelope(o)::text AS payload
FROM whk.outbox o
WHERE (o.created_at, o.id) > (%(after_at)s, %(after_id)s)
  AND o.created_at >= %(since)s AND o.created_at < %(until)s
  AND (%(tenant)s::bigint IS NULL OR EXISTS (
        SELECT 1 FROM whk.whk_03_entregas d
        WHERE d.outbox_id = o.id AND d.event_created_at = o.created_at AND d.consumer_id = %(tenant)s::bigint))
ORDER BY o.created_at, o.id
LIMIT %(limit)s

-- name: events_count :one
SELECT count(*)
FROM whk.outbox o
WHERE o.created_at >= %(since)s AND o.created_at < %(until)s
  AND (%(tenant)s::bigint IS NULL OR EXISTS (
        SELECT 1 FROM whk.whk_03_entregas d
        WHERE d.outbox_id = o.id AND d.event_created_at = o.created_at AND d.consumer_id = %(tenant)s::bigint))
