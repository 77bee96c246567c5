-- Monitoring queries (api/monitoring/repository.py is the only caller): health, metrics, dashboard,
-- alerts. Tenant-scoped where the data belongs to a consumer (%(tenant)s NULL = admin, everything).

-- name: health :one
-- One round trip: schema version, dispatcher liveness and the oldest work still waiting.
SELECT (SELECT coalesce(max(version), 0) FROM whk.schema_migrations) AS schema_version,
       (SELECT extract(epoch FROM clock_timestamp() - min(o.created_at))
        FROM whk.outbox o WHERE o.status = 'pending') AS oldest_unrouted_age_s,
       (SELECT extract(epoch FROM clock_timestamp() - min(d.next_attempt_at))
        FROM whk.whk_03_entregas d
        WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()) AS oldest_due_delivery_age_s,
       (SELECT (value #>> '{}')::float8 FROM whk.whk_05_configuracoes
        WHERE key = 'monitoring.oldest_pending_warn_s') AS oldest_pending_warn_s,
       -- Quarantined webhooks (the dispatcher skips them until cleared): the partial index, first 100 ids.
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.quarantined_at IS NOT NULL AND w.deleted_at IS NULL) AS quarantined_count,
       ARRAY(SELECT w.id FROM whk.whk_01_webhooks w
             WHERE w.quarantined_at IS NOT NULL AND w.deleted_at IS NULL
             ORDER BY w.id LIMIT 100) AS quarantined_webhooks

-- name: dispatchers :many
SELECT x.id, x.started_at, x.heartbeat_at, x.idle, x.stopping,
       extract(epoch FROM clock_timestamp() - x.heartbeat_at)::float8 AS heartbeat_age_s,
       x.ssrf_policy, x.ssrf_exempt, x.last_error, x.last_error_at
FROM whk.dispatchers x
ORDER BY x.id

-- name: supervised :many
-- Children of running `whk up` supervisors (they refresh their rows every few seconds and delete them when
-- they stop); rows of a supervisor that stopped refreshing (killed) are left out.
SELECT p.supervisor, p.name, p.pid, p.state, p.restarts, p.crashes_in_window, p.last_exit, p.last_exit_at,
       p.updated_at
FROM whk.supervised_processes p
WHERE p.updated_at > clock_timestamp() - make_interval(secs => %(fresh_s)s)
ORDER BY p.supervisor, p.name

-- name: delivery_status_counts :many
SELECT d.status, count(*) AS n
FROM whk.whk_03_entregas d
WHERE (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
GROUP BY d.status

-- name: webhook_status_counts :many
SELECT w.status, count(*) AS n
FROM whk.whk_01_webhooks w
WHERE w.deleted_at IS NULL AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)
GROUP BY w.status

-- name: breaker_counts :many
SELECT r.breaker_state AS status, count(*) AS n
FROM whk.webhook_runtime r
JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
WHERE w.deleted_at IS NULL AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)
GROUP BY r.breaker_state

-- name: outbox_pending :one
SELECT count(*) FROM whk.outbox o WHERE o.status = 'pending'

-- name: recent_attempts :many
-- Attempts of the last %(window_s)s seconds by outcome, with latency percentiles (ms).
SELECT t.outcome AS status, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t.duration_ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms) AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY t.duration_ms) AS p99,
       coalesce(sum(t.duration_ms), 0) AS total_ms
FROM whk.whk_03_entregas_tentativas t
JOIN whk.whk_03_entregas d ON d.id = t.delivery_id
WHERE t.started_at >= clock_timestamp() - make_interval(secs => %(window_s)s)
  AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
GROUP BY t.outcome

-- name: top_failing :many
-- Webhooks with the most dead letters and failed attempts in the last 24 hours.
SELECT w.id AS webhook_id, w.name, w.url, w.status, coalesce(r.breaker_state, 'closed') AS breaker_state,
       f.dead_24h, f.failed_attempts_24h
FROM (
    SELECT d.webhook_id,
           count(*) FILTER (WHERE d.status = 'dead' AND d.dead_at >= clock_timestamp() - interval '24 hours')
               AS dead_24h,
           coalesce(sum(d.attempts) FILTER (WHERE d.status <> 'delivered'), 0) AS failed_attempts_24h
    FROM whk.whk_03_entregas d
    WHERE d.updated_at >= clock_timestamp() - interval '24 hours'
      AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
    GROUP BY d.webhook_id
) f
JOIN whk.whk_01_webhooks w ON w.id = f.webhook_id
LEFT JOIN whk.webhook_runtime r ON r.webhook_id = w.id
WHERE f.dead_24h > 0 OR f.failed_attempts_24h > 0
ORDER BY f.dead_24h DESC, f.failed_attempts_24h DESC, w.id
LIMIT 10

-- name: recent_dead :many
SELECT d.id, d.webhook_id, d.event_type, d.dead_at, d.dead_reason, d.last_status_code, d.last_error
FROM whk.whk_03_entregas d
WHERE d.status = 'dead' AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
ORDER BY d.dead_at DESC, d.id DESC
LIMIT 10

-- name: list_alerts :many
SELECT a.id, a.consumer_id, a.name, a.description, a.severity, a.condition, a.channels, a.escalation,
       a.throttle_seconds, a.enabled, a.state, a.last_triggered_at, a.trigger_count, a.created_at, a.updated_at
FROM whk.whk_06_alertas a
WHERE (%(tenant)s::bigint IS NULL OR a.consumer_id = %(tenant)s::bigint)
  AND (%(state)s::text IS NULL OR a.state = %(state)s::text)
  AND (%(enabled)s::boolean IS NULL OR a.enabled = %(enabled)s::boolean)
  AND (%(after_id)s::bigint IS NULL OR a.id > %(after_id)s::bigint)
ORDER BY a.id
LIMIT %(limit)s

-- name: insert_alert :one
INSERT INTO whk.whk_06_alertas (consumer_id, name, description, severity, condition, channels, escalation,
                                throttle_seconds, enabled)
VALUES (%(consumer_id)s, %(name)s, %(description)s, %(severity)s, %(condition)s, %(channels)s, %(escalation)s,
        %(throttle_seconds)s, %(enabled)s)
RETURNING id

-- name: get_alert :one
SELECT a.id, a.consumer_id, a.name, a.description, a.severity, a.condition, a.channels, a.escalation,
       a.throttle_seconds, a.enabled, a.state, a.last_triggered_at, a.trigger_count, a.created_at, a.updated_at
FROM whk.whk_06_alertas a
WHERE a.id = %(id)s

-- name: alert_metric :one
-- The current value of an alert's metric over its window (scope: webhook, else consumer, else all).
-- failure_rate: dead / finished deliveries; dead_letters: count; retry_rate: deliveries retried /
-- attempted; latency_p95_ms: attempt latency; pending_age_s: oldest due pending delivery;
-- consecutive_failures: the webhook's breaker streak (max over the scope).
WITH d AS (
    SELECT d.status, d.attempts
    FROM whk.whk_03_entregas d
    WHERE d.updated_at >= clock_timestamp() - make_interval(secs => %(window_s)s)
      AND (%(consumer_id)s::bigint IS NULL OR d.consumer_id = %(consumer_id)s::bigint)
      AND (%(webhook_id)s::bigint IS NULL OR d.webhook_id = %(webhook_id)s::bigint)
)
SELECT CASE %(metric)s
    WHEN 'failure_rate' THEN (SELECT count(*) FILTER (WHERE status = 'dead')::float8
                                     / nullif(count(*) FILTER (WHERE status IN ('dead', 'delivered')), 0) FROM d)
    WHEN 'dead_letters' THEN (SELECT count(*) FILTER (WHERE status = 'dead')::float8 FROM d)
    WHEN 'retry_rate' THEN (SELECT count(*) FILTER (WHERE attempts > 1)::float8
                                   / nullif(count(*) FILTER (WHERE attempts > 0), 0) FROM d)
    WHEN 'latency_p95_ms' THEN (
        SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms)
        FROM whk.whk_03_entregas_tentativas t
        JOIN whk.whk_03_entregas x ON x.id = t.delivery_id
        WHERE t.started_at >= clock_timestamp() - make_interval(secs => %(window_s)s)
          AND (%(consumer_id)s::bigint IS NULL OR x.consumer_id = %(consumer_id)s::bigint)
          AND (%(webhook_id)s::bigint IS NULL OR x.webhook_id = %(webhook_id)s::bigint))
    WHEN 'pending_age_s' THEN (
        SELECT extract(epoch FROM clock_timestamp() - min(x.next_attempt_at))::float8
        FROM whk.whk_03_entregas x
        WHERE x.status = 'pending' AND x.next_attempt_at <= clock_timestamp()
          AND (%(consumer_id)s::bigint IS NULL OR x.consumer_id = %(consumer_id)s::bigint)
          AND (%(webhook_id)s::bigint IS NULL OR x.webhook_id = %(webhook_id)s::bigint))
    WHEN 'consecutive_failures' THEN (
        SELECT max(r.consecutive_failures)::float8
        FROM whk.webhook_runtime r JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
        WHERE (%(consumer_id)s::bigint IS NULL OR w.consumer_id = %(consumer_id)s::bigint)
          AND (%(webhook_id)s::bigint IS NULL OR w.id = %(webhook_id)s::bigint))
END

-- name: webhook_owner :one
SELECT w.consumer_id FROM whk.whk_01_webhooks w WHERE w.id = %(id)s AND w.deleted_at IS NULL
