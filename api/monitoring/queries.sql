-- Monitoring queries (api/monitoring/repository.py is the only caller): health, metrics, dashboard,
-- alerts. Tenant-scoped where the data belongs to a consumer (%(tenant)s NULL = admin, everything).

-- name: health :one
-- One round trip: schema version, dispatcher liveness and the oldest work still waiting.
SELECT (SELECT coalesce(max(version), 0) FROM whk.schema_migrations) AS schema_version,
       (SELECT extract(epoch FROM clock_timestamp() - min(o.created_at))
        FROM whk.outbox o WHERE o.status = 'pending') AS oldest_unrouted_age_s,
       (SELECT extract(epoch FROM clock_timestamp() - min(d.next_attempt_at))
        FROM whk.delivery_queue d
        WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()) AS oldest_due_delivery_age_s,
       (SELECT (value #>> '{}')::float8 FROM whk.whk_05_configuracoes
        WHERE key = 'monitoring.oldest_pending_warn_s') AS oldest_pending_warn_s,
       -- Quarantined webhooks (the dispatcher skips them until cleared): the partial index, first 100 ids.
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.quarantined_at IS NOT NULL AND w.deleted_at IS NULL) AS quarantined_count,
       ARRAY(SELECT w.id FROM whk.whk_01_webhooks w
             WHERE w.quarantined_at IS NOT NULL AND w.deleted_at IS NULL
             ORDER BY w.id LIMIT 100) AS quarantined_webhooks,
       -- Webhooks waiting for a signing secret (never sent unsigned; the job worker provisions one): the
       -- partial index, first 100 ids, and how long the oldest has waited.
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL) AS needs_secret_count,
       ARRAY(SELECT w.id FROM whk.whk_01_webhooks w
             WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL
             ORDER BY w.id LIMIT 100) AS needs_secret_webhooks,
       (SELECT extract(epoch FROM clock_timestamp() - min(w.needs_secret_since))::float8
        FROM whk.whk_01_webhooks w
        WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL) AS needs_secret_oldest_s

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
-- The window starts at now() (stable), not clock_timestamp() (volatile: never an index bound, so every
-- scrape read the whole attempt log). The tenant goes through the attempt's webhook (a delivery's consumer
-- is its webhook's; joining the delivery table made the planner hash all of it), read per webhook by
-- whk.window_attempts.
SELECT t.outcome AS status, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t.duration_ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms) AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY t.duration_ms) AS p99,
       coalesce(sum(t.duration_ms), 0) AS total_ms
FROM whk.window_attempts(now() - make_interval(secs => %(window_s)s), 'infinity',
                         CASE WHEN %(tenant)s::bigint IS NOT NULL
                              THEN ARRAY(SELECT w.id FROM whk.whk_01_webhooks w
                                         WHERE w.consumer_id = %(tenant)s::bigint) END) t
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
FROM whk.delivery_queue d  -- dead letters are live rows
WHERE d.status = 'dead' AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
ORDER BY d.dead_at DESC, d.id DESC
LIMIT 10

-- name: list_alerts :many
-- A consumer sees its own rules only; global rules (consumer_id NULL) are the admin's.
SELECT a.id, a.consumer_id, a.name, a.description, a.severity, a.condition, a.channels, a.escalation,
       a.throttle_seconds, a.for_s, a.enabled, a.state, a.builtin, a.pending_since, a.firing_since,
       a.acknowledged_at, a.acknowledged_by, a.silenced_until, a.escalation_step, a.last_value,
       a.last_evaluated_at, a.last_triggered_at, a.trigger_count, a.created_at, a.updated_at
FROM whk.whk_06_alertas a
WHERE (%(tenant)s::bigint IS NULL OR a.consumer_id = %(tenant)s::bigint)
  AND (%(state)s::text IS NULL OR a.state = %(state)s::text)
  AND (%(enabled)s::boolean IS NULL OR a.enabled = %(enabled)s::boolean)
  AND (NOT %(breaching_only)s OR a.state IN ('pending', 'firing'))
  AND (%(after_id)s::bigint IS NULL OR a.id > %(after_id)s::bigint)
ORDER BY a.id
LIMIT %(limit)s

-- name: insert_alert :one
INSERT INTO whk.whk_06_alertas (consumer_id, name, description, severity, condition, channels, escalation,
                                throttle_seconds, for_s, enabled)
VALUES (%(consumer_id)s, %(name)s, %(description)s, %(severity)s, %(condition)s, %(channels)s, %(escalation)s,
        %(throttle_seconds)s, %(for_s)s, %(enabled)s)
RETURNING id

-- name: update_alert :exec
-- A changed rule keeps its state: the next evaluation applies the new condition (a firing rule whose new
-- condition does not hold, or that is now disabled, resolves, and the channels it paged hear it).
UPDATE whk.whk_06_alertas
SET name = %(name)s, description = %(description)s, severity = %(severity)s, condition = %(condition)s,
    channels = %(channels)s, escalation = %(escalation)s, throttle_seconds = %(throttle_seconds)s,
    for_s = %(for_s)s, enabled = %(enabled)s, updated_at = now()
WHERE id = %(id)s

-- name: delete_alert :exec
DELETE FROM whk.whk_06_alertas WHERE id = %(id)s

-- name: delete_channels :exec
-- Channels paged by an open activation stay until the worker's housekeeping finds them unreferenced: the
-- resolve still has to reach them.
DELETE FROM whk.alert_channels
WHERE id = ANY(%(ids)s::bigint[]) AND id <> ALL(%(keep)s::bigint[])

-- name: channels_by_id :many
SELECT c.id, c.type, c.display FROM whk.alert_channels c WHERE c.id = ANY(%(ids)s::bigint[])

-- name: acknowledge :one
-- Only a firing activation can be acknowledged; the worker tells the paged channels at its next run.
WITH a AS (
    UPDATE whk.whk_06_alertas
    SET acknowledged_at = now(), acknowledged_by = %(by)s, ack_notified = false, updated_at = now()
    WHERE id = %(id)s AND state = 'firing' AND acknowledged_at IS NULL
    RETURNING history_id
)
UPDATE whk.whk_06_alertas_historico h SET acknowledged_at = now(), acknowledged_by = %(by)s
FROM a WHERE h.id = a.history_id
RETURNING h.id

-- name: silence :exec
UPDATE whk.whk_06_alertas
SET silenced_until = CASE WHEN %(duration_s)s::integer = 0 THEN NULL
                          ELSE now() + make_interval(secs => %(duration_s)s::integer) END,
    updated_at = now()
WHERE id = %(id)s

-- name: history :many
SELECT h.id, h.alert_id, h.triggered_at, h.resolved_at, h.value, h.severity, h.acknowledged_at,
       h.acknowledged_by, h.details, h.notified
FROM whk.whk_06_alertas_historico h
WHERE h.alert_id = %(id)s AND (%(after_id)s::bigint IS NULL OR h.id < %(after_id)s::bigint)
ORDER BY h.id DESC
LIMIT %(limit)s

-- name: open_test_activation :one
INSERT INTO whk.whk_06_alertas_historico (alert_id, triggered_at, resolved_at, value, details, severity)
SELECT a.id, now(), now(), a.last_value, '{"test": true}'::jsonb, a.severity
FROM whk.whk_06_alertas a WHERE a.id = %(id)s
RETURNING id, triggered_at

-- name: enqueue_notice :one
SELECT whk.enqueue_notice(%(payload)s, %(dedupe_key)s)

-- name: schedulers :many
-- The newest run of every scheduled operations job (health: stale after 3 periods).
SELECT DISTINCT ON (r.job) r.job, r.period_s, r.started_at AS last_started_at, r.ok,
       extract(epoch FROM clock_timestamp() - r.started_at)::float8 AS age_s
FROM whk.ops_job_runs r
ORDER BY r.job, r.started_at DESC

-- name: insert_slo :one
INSERT INTO whk.slos (consumer_id, webhook_id, name, objective, window_days)
VALUES (%(consumer_id)s, %(webhook_id)s, %(name)s, %(objective)s, %(window_days)s)
RETURNING id

-- name: list_slos :many
SELECT k.slo_id, k.consumer_id, k.webhook_id, k.name, k.objective, k.window_days, k.attempts, k.failures,
       k.compliance, k.error_budget, k.budget_remaining, k.burn_rate_5m, k.burn_rate_30m, k.burn_rate_1h,
       k.burn_rate_2h, k.burn_rate_6h, k.burn_rate_1d, k.burn_rate_3d,
       coalesce((SELECT array_agg(a.id ORDER BY a.id) FROM whk.whk_06_alertas a
                 WHERE (a.condition ->> 'slo_id')::bigint = k.slo_id), '{}') AS alert_ids
FROM whk.kpi_slo k
WHERE (%(tenant)s::bigint IS NULL OR k.consumer_id = %(tenant)s::bigint)
  AND (%(id)s::bigint IS NULL OR k.slo_id = %(id)s::bigint)
ORDER BY k.slo_id

-- name: slo_history :many
-- Compliance per day over the SLO's window (from the minute roll-up).
SELECT date_trunc('day', m.minute) AS day, sum(m.attempts)::bigint AS attempts,
       sum(m.failures)::bigint AS failures,
       1 - sum(m.failures)::float8 / nullif(sum(m.attempts), 0) AS compliance
FROM whk.slos s
JOIN whk.kpi_webhook_minute m
  ON (s.webhook_id IS NULL OR m.webhook_id = s.webhook_id) AND (s.consumer_id IS NULL OR m.consumer_id = s.consumer_id)
WHERE s.id = %(id)s AND m.minute >= date_trunc('day', clock_timestamp() - make_interval(days => s.window_days))
GROUP BY 1
ORDER BY 1

-- name: now :one
SELECT now()

-- name: paged_channels :one
SELECT a.paged_channels FROM whk.whk_06_alertas a WHERE a.id = %(id)s AND a.state = 'firing'

-- name: get_alert :one
SELECT a.id, a.consumer_id, a.name, a.description, a.severity, a.condition, a.channels, a.escalation,
       a.throttle_seconds, a.for_s, a.enabled, a.state, a.builtin, a.pending_since, a.firing_since,
       a.acknowledged_at, a.acknowledged_by, a.silenced_until, a.escalation_step, a.last_value,
       a.last_evaluated_at, a.last_triggered_at, a.trigger_count, a.created_at, a.updated_at
FROM whk.whk_06_alertas a
WHERE a.id = %(id)s AND (%(tenant)s::bigint IS NULL OR a.consumer_id = %(tenant)s::bigint)

-- name: webhook_owner :one
SELECT w.consumer_id FROM whk.whk_01_webhooks w WHERE w.id = %(id)s AND w.deleted_at IS NULL
