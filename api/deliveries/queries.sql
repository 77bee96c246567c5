-- Delivery resource queries (api/deliveries/repository.py is the only caller).
-- %(tenant)s is NULL for admins, else the caller's consumer id: other tenants' rows are invisible.

-- name: delivery_columns :fragment
d.id, d.event_id, d.outbox_id, d.event_created_at, d.event_type, d.webhook_id, d.consumer_id, d.status,
d.ordering_key, d.commit_seq, d.attempts, d.next_attempt_at, d.lease_until, d.last_status_code, d.last_error,
d.last_attempt_at, d.delivered_at, d.ack_deadline, d.acked_at, d.dead_at, d.dead_reason, d.render_problem,
d.created_at, d.updated_at, d.superseded_by

-- name: list_deliveries :many
SELECT {columns}
FROM whk.whk_03_entregas d
WHERE {where}
ORDER BY {order}
LIMIT %(limit)s

-- name: get_delivery :one
-- payload: the body delivered (rendered for a pinned major, else the event's envelope; NULL when the
-- event's outbox partition was dropped).
SELECT {columns}, coalesce(d.payload, whk.event_envelope(o)) AS payload
FROM whk.whk_03_entregas d
LEFT JOIN whk.outbox o ON o.id = d.outbox_id AND o.created_at = d.event_created_at
WHERE d.id = %(id)s AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)

-- name: lock_delivery :one
SELECT {columns}
FROM whk.whk_03_entregas d
WHERE d.id = %(id)s AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
FOR UPDATE

-- name: delivery_attempts :many
SELECT t.id, t.attempt_no, t.batch_id, t.dispatcher_id, t.started_at, t.duration_ms, t.request_method,
       t.request_url, t.request_headers, t.request_body_sha256, t.request_body_size, t.response_status,
       t.response_headers, t.response_body, t.response_truncated, t.error_class, t.error_detail, t.outcome
FROM whk.whk_03_entregas_tentativas t
-- A batch request is one attempt shared by its members: each delivery lists its attempts (attempt_ids).
WHERE t.id = ANY (SELECT unnest(d.attempt_ids) FROM whk.whk_03_entregas d WHERE d.id = %(id)s)
   OR t.delivery_id = %(id)s
ORDER BY t.attempt_no, t.id
LIMIT 200

-- name: retry_one :one
-- Engine function: same event_id (so the same webhook-id header), fresh retry schedule.
SELECT whk.retry_delivery(%(id)s)

-- name: ack_one :one
SELECT whk.ack_delivery(%(id)s)

-- name: webhook_deleted :one
-- Whether the delivery's webhook was deleted: whk.retry_deliveries refuses those deliveries.
SELECT w.deleted_at IS NOT NULL
FROM whk.whk_03_entregas d JOIN whk.whk_01_webhooks w ON w.id = d.webhook_id
WHERE d.id = %(id)s

-- name: bulk_count :one
SELECT count(*) FROM whk.whk_03_entregas d
WHERE {where} AND d.status <> 'in_flight'
  AND NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)

-- name: bulk_skipped :one
-- Matching deliveries of deleted webhooks: never re-queued.
SELECT count(*) FROM whk.whk_03_entregas d
WHERE {where} AND d.status <> 'in_flight'
  AND EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)

-- name: purge_candidates :many
-- {where} holds the tenant and the caller's filters (allow-listed); only dead letters are purged.
SELECT d.id
FROM whk.whk_03_entregas d
WHERE {where} AND d.status = 'dead'
ORDER BY d.id
LIMIT %(limit)s

-- name: purge_count :one
SELECT count(*) FROM whk.whk_03_entregas d WHERE {where} AND d.status = 'dead'

-- name: purge_many :many
SELECT whk.purge_dead_deliveries(%(ids)s::bigint[])

-- name: stats_overall :one
-- Delivery outcomes of deliveries created in the window, and attempt latency of attempts started in it.
WITH dl AS (
    SELECT d.status, d.attempts, d.delivered_at, d.event_created_at
    FROM whk.whk_03_entregas d
    WHERE d.created_at >= %(since)s AND d.created_at < %(until)s
      AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
      AND (%(webhook_id)s::bigint IS NULL OR d.webhook_id = %(webhook_id)s::bigint)
), at AS (
    SELECT t.duration_ms
    FROM whk.whk_03_entregas_tentativas t
    -- A finished delivery finished after its attempt started: only those days of the history are probed.
    JOIN whk.whk_03_entregas d
      ON d.id = t.delivery_id AND (d.finished_at IS NULL OR d.finished_at >= t.started_at)
    WHERE t.started_at >= %(since)s AND t.started_at < %(until)s AND t.duration_ms IS NOT NULL
      AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
      AND (%(webhook_id)s::bigint IS NULL OR d.webhook_id = %(webhook_id)s::bigint)
)
SELECT
    (SELECT count(*) FROM dl) AS total,
    (SELECT count(*) FROM dl WHERE status = 'delivered') AS delivered,
    (SELECT count(*) FROM dl WHERE status = 'dead') AS dead,
    (SELECT count(*) FROM dl WHERE status IN ('pending', 'in_flight', 'awaiting_ack')) AS in_progress,
    (SELECT count(*) FROM dl WHERE attempts > 1) AS retried,
    (SELECT count(*) FROM dl WHERE attempts > 0) AS attempted,
    (SELECT count(*) FROM at) AS attempt_count,
    (SELECT percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) FROM at)
        AS attempt_latency_ms,
    (SELECT percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99])
            WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - event_created_at) * 1000)
     FROM dl WHERE delivered_at IS NOT NULL) AS end_to_end_ms

-- name: stats_grouped :many
-- Same measures per {group} (d.webhook_id or d.consumer_id), busiest first.
WITH dl AS (
    SELECT {group} AS key, d.status, d.attempts, d.delivered_at, d.event_created_at
    FROM whk.whk_03_entregas d
    WHERE d.created_at >= %(since)s AND d.created_at < %(until)s
      AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
      AND (%(webhook_id)s::bigint IS NULL OR d.webhook_id = %(webhook_id)s::bigint)
), at AS (
    SELECT {group} AS key, t.duration_ms
    FROM whk.whk_03_entregas_tentativas t
    -- A finished delivery finished after its attempt started: only those days of the history are probed.
    JOIN whk.whk_03_entregas d
      ON d.id = t.delivery_id AND (d.finished_at IS NULL OR d.finished_at >= t.started_at)
    WHERE t.started_at >= %(since)s AND t.started_at < %(until)s AND t.duration_ms IS NOT NULL
      AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
      AND (%(webhook_id)s::bigint IS NULL OR d.webhook_id = %(webhook_id)s::bigint)
), outcome AS (
    SELECT key, count(*) AS total,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'dead') AS dead,
           count(*) FILTER (WHERE status IN ('pending', 'in_flight', 'awaiting_ack')) AS in_progress,
           count(*) FILTER (WHERE attempts > 1) AS retried,
           count(*) FILTER (WHERE attempts > 0) AS attempted,
           percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99])
               WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - event_created_at) * 1000)
               FILTER (WHERE delivered_at IS NOT NULL) AS end_to_end_ms
    FROM dl GROUP BY key
), latency AS (
    SELECT key, count(*) AS attempt_count,
           percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS attempt_latency_ms
    FROM at GROUP BY key
)
SELECT coalesce(o.key, l.key) AS key,
       coalesce(o.total, 0) AS total, coalesce(o.delivered, 0) AS delivered, coalesce(o.dead, 0) AS dead,
       coalesce(o.in_progress, 0) AS in_progress, coalesce(o.retried, 0) AS retried,
       coalesce(o.attempted, 0) AS attempted, coalesce(l.attempt_count, 0) AS attempt_count,
       l.attempt_latency_ms, o.end_to_end_ms
FROM outcome o FULL JOIN latency l ON l.key = o.key
ORDER BY coalesce(o.total, 0) DESC, 1
LIMIT %(limit)s
