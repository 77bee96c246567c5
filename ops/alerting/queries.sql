-- Alert evaluation (ops/alerting/repository.py is the only caller). Metric values come from the KPI views
-- and functions of docs/operations.md, so the API, the dashboard and the alerts read the same numbers.

-- name: kpi_rollup :one
SELECT whk.kpi_rollup(%(horizon_s)s)

-- name: due_rules :many
-- Every enabled rule with its metric's value now, locked for this evaluation (a rule the API is changing
-- this instant is skipped until the next one). Scope: the condition's webhook_id, else the rule's
-- consumer, else everything. Window metrics use whk.kpi_webhook_window_at (the roll-up); state metrics
-- whk.kpi_webhook_state, whk.kpi_platform and whk.kpi_dispatchers; slo_burn_rate the lower of the burn
-- rates over the condition's two windows (both must exceed the threshold, as in the SRE workbook).
WITH r AS (
    SELECT a.*, a.condition ->> 'metric' AS metric,
           coalesce((a.condition ->> 'window_s')::integer, 300) AS window_s,
           (a.condition ->> 'webhook_id')::bigint AS scope_webhook
    FROM whk.whk_06_alertas a
    -- a rule disabled while pending or firing is walked once more, without a value: it clears
    WHERE a.enabled OR a.state IN ('pending', 'firing')
    ORDER BY a.id
    FOR UPDATE OF a SKIP LOCKED
)
SELECT r.id, r.consumer_id, r.name, r.description, r.severity, r.condition, r.channels, r.escalation, r.throttle_seconds,
       r.for_s, r.state, r.pending_since, r.firing_since, r.last_notified_at, r.escalation_step,
       r.acknowledged_at, r.ack_notified, r.silenced_until, r.paged_channels, r.history_id,
       clock_timestamp() AS now,
       CASE WHEN NOT r.enabled THEN NULL ELSE CASE r.metric
        WHEN 'failure_rate' THEN (
            SELECT sum(k.failures)::float8 / nullif(sum(k.attempts), 0) FROM whk.kpi_webhook_window_at(r.window_s) k
            WHERE (r.scope_webhook IS NULL OR k.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR k.consumer_id = r.consumer_id))
        WHEN 'retry_rate' THEN (
            SELECT sum(k.retries)::float8 / nullif(sum(k.attempts), 0) FROM whk.kpi_webhook_window_at(r.window_s) k
            WHERE (r.scope_webhook IS NULL OR k.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR k.consumer_id = r.consumer_id))
        WHEN 'dead_letters' THEN (
            SELECT coalesce(sum(k.dead_letters), 0)::float8 FROM whk.kpi_webhook_window_at(r.window_s) k
            WHERE (r.scope_webhook IS NULL OR k.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR k.consumer_id = r.consumer_id))
        WHEN 'latency_p95_ms' THEN (
            SELECT whk.kpi_latency_bound(0.95,
                       ARRAY[sum(k.lat_le[1]), sum(k.lat_le[2]), sum(k.lat_le[3]), sum(k.lat_le[4]),
                             sum(k.lat_le[5]), sum(k.lat_le[6]), sum(k.lat_le[7]), sum(k.lat_le[8])]::bigint[],
                       sum(k.timed)::bigint, max(k.lat_max_ms))
            FROM whk.kpi_webhook_window_at(r.window_s) k
            WHERE (r.scope_webhook IS NULL OR k.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR k.consumer_id = r.consumer_id))
        WHEN 'consecutive_failures' THEN (
            SELECT max(s.consecutive_failures)::float8 FROM whk.kpi_webhook_state s
            WHERE (r.scope_webhook IS NULL OR s.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR s.consumer_id = r.consumer_id))
        -- Backlog age counts only deliveries that should be moving: those of a paused webhook, a suspended
        -- consumer, or a consumer inside its quiet hours (non-urgent webhooks) wait by design, as the
        -- claim (whk.claim_deliveries) leaves them, and must not page anyone.
        WHEN 'pending_age_s' THEN (
            SELECT coalesce(max(s.oldest_pending_age_s), 0) FROM whk.kpi_webhook_state s
            JOIN whk.whk_01_webhooks w ON w.id = s.webhook_id
            JOIN whk.whk_04_assinantes c ON c.id = s.consumer_id
            WHERE s.status <> 'paused' AND c.status <> 'suspended'
              AND whk.quiet_hold_until(c.quiet_hours, w.urgent, clock_timestamp()) IS NULL
              AND (r.scope_webhook IS NULL OR s.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR s.consumer_id = r.consumer_id))
        WHEN 'breaker_open_s' THEN (
            SELECT coalesce(max(s.breaker_open_s), 0) FROM whk.kpi_webhook_state s
            WHERE (r.scope_webhook IS NULL OR s.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR s.consumer_id = r.consumer_id))
        WHEN 'webhooks_disabled' THEN (
            SELECT count(*)::float8 FROM whk.kpi_webhook_state s
            WHERE s.status = 'disabled'
              AND (r.scope_webhook IS NULL OR s.webhook_id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR s.consumer_id = r.consumer_id))
        WHEN 'webhooks_needs_secret' THEN (
            SELECT count(*)::float8 FROM whk.whk_01_webhooks w
            WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL
              AND (r.scope_webhook IS NULL OR w.id = r.scope_webhook)
              AND (r.consumer_id IS NULL OR w.consumer_id = r.consumer_id))
        WHEN 'live_dispatchers' THEN (
            SELECT count(*)::float8 FROM whk.kpi_dispatchers x
            WHERE NOT x.stopping AND x.heartbeat_age_s <= %(lease_s)s)
        WHEN 'unrouted_age_s' THEN (SELECT coalesce(p.oldest_unrouted_age_s, 0) FROM whk.kpi_platform p)
        WHEN 'slo_burn_rate' THEN (
            SELECT least(whk.slo_error_ratio(s.id, coalesce((r.condition ->> 'long_window_s')::integer, 3600)),
                         whk.slo_error_ratio(s.id, coalesce((r.condition ->> 'short_window_s')::integer, 300)))
                   / (1 - s.objective)
            FROM whk.slos s
            WHERE s.id = (r.condition ->> 'slo_id')::bigint
              AND (r.consumer_id IS NULL OR s.consumer_id = r.consumer_id))
       END END AS value
FROM r
ORDER BY r.id

-- name: touch_rules :exec
-- Rules whose state did not change: their value and evaluation time, in one statement.
UPDATE whk.whk_06_alertas a
SET last_value = v.value, last_evaluated_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(values)s::float8[]) AS v(id, value)
WHERE a.id = v.id

-- name: save_rule :exec
UPDATE whk.whk_06_alertas
SET state = %(state)s, pending_since = %(pending_since)s, firing_since = %(firing_since)s,
    last_notified_at = %(last_notified_at)s, escalation_step = %(escalation_step)s,
    acknowledged_at = %(acknowledged_at)s, ack_notified = %(ack_notified)s, paged_channels = %(paged_channels)s, history_id = %(history_id)s,
    last_value = %(value)s, last_evaluated_at = %(now)s,
    last_triggered_at = CASE WHEN %(opened)s THEN %(now)s ELSE last_triggered_at END,
    trigger_count = trigger_count + CASE WHEN %(opened)s THEN 1 ELSE 0 END
WHERE id = %(id)s

-- name: open_history :one
INSERT INTO whk.whk_06_alertas_historico (alert_id, triggered_at, value, details, severity)
VALUES (%(alert_id)s, %(now)s, %(value)s, %(details)s, %(severity)s)
RETURNING id

-- name: close_history :exec
UPDATE whk.whk_06_alertas_historico
SET resolved_at = %(now)s, details = details || jsonb_build_object('resolved_value', %(value)s::float8)
WHERE id = %(id)s

-- name: note_history :exec
-- Append what was (or was not) notified to an activation's record.
UPDATE whk.whk_06_alertas_historico SET notified = notified || %(entries)s::jsonb WHERE id = %(id)s

-- name: enqueue :exec
-- A notification job in this transaction: it exists exactly when the state change that caused it commits
-- (whk.enqueue_notice skips a notice already queued or running under the same dedupe key).
SELECT whk.enqueue_notice(%(payload)s, %(dedupe_key)s)

-- name: start_run :one
INSERT INTO whk.ops_job_runs (job, period_s, worker) VALUES (%(job)s, %(period_s)s, %(worker)s) RETURNING id

-- name: finish_run :exec
UPDATE whk.ops_job_runs SET finished_at = clock_timestamp(), ok = %(ok)s, detail = %(detail)s WHERE id = %(id)s

-- name: create_partitions :exec
-- The coming days of every time-partitioned table (whk.partitions lists each, by its default partition).
SELECT whk.create_partitions(t.parent) FROM (SELECT DISTINCT p.parent FROM whk.partitions p) t

-- name: forget_runs :exec
DELETE FROM whk.ops_job_runs WHERE started_at < clock_timestamp() - interval '1 day'

-- name: forget_channels :one
-- Channels no rule refers to any more (kept after a change or a deletion while their resolve was due) and
-- no queued or running notice needs: gone after an hour.
WITH gone AS (
    DELETE FROM whk.alert_channels c
    WHERE c.created_at < clock_timestamp() - interval '1 hour'
      AND NOT EXISTS (
          SELECT 1 FROM whk.whk_06_alertas a
          WHERE c.id = ANY(a.paged_channels)
             OR a.channels @> jsonb_build_array(jsonb_build_object('channel_id', c.id))
             OR jsonb_path_exists(a.escalation, '$[*].channels[*] ? (@.channel_id == $id)',
                                  jsonb_build_object('id', c.id)))
      AND NOT EXISTS (
          SELECT 1 FROM whk.pgqueuer q
          WHERE q.entrypoint = 'notify' AND q.status IN ('queued', 'picked')
            AND (convert_from(q.payload, 'UTF8')::jsonb ->> 'channel_id')::bigint = c.id)
    RETURNING 1
)
SELECT count(*) FROM gone

-- name: channel :one
SELECT c.id, c.type, c.target_enc, c.secret_enc, c.config FROM whk.alert_channels c WHERE c.id = %(id)s

-- name: legacy_rules :many
-- Rules saved before channels had their own encrypted rows: inline {"type", "target"} entries.
SELECT a.id, a.consumer_id, a.channels, a.escalation
FROM whk.whk_06_alertas a
WHERE jsonb_path_exists(a.channels, '$[*].target') OR jsonb_path_exists(a.escalation, '$[*].channels[*].target')
ORDER BY a.id
FOR UPDATE SKIP LOCKED

-- name: set_rule_channels :exec
UPDATE whk.whk_06_alertas SET channels = %(channels)s, escalation = %(escalation)s WHERE id = %(id)s

-- name: replay_step :one
-- One batch of a replay (whk.replay_step): true while there may be more.
SELECT whk.replay_step(%(id)s, %(batch)s)

-- name: bulk_retry_step :one
-- One batch of a bulk retry (whk.bulk_retry_step): true while there may be more.
SELECT whk.bulk_retry_step(%(id)s, %(batch)s)

-- name: bulk_retry_failed :exec
-- A bulk retry whose job failed: recorded so GET /bulk-retries/{id} says so instead of "running" forever.
UPDATE whk.bulk_retries
SET state = 'failed', error = %(error)s, finished_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE id = %(id)s AND state IN ('queued', 'running')

-- name: replay_failed :exec
-- A replay whose job failed: recorded so GET /replays/{id} says so instead of "running" forever.
UPDATE whk.replays
SET state = 'failed', error = %(error)s, finished_at = clock_timestamp(), updated_at = clock_timestamp()
WHERE id = %(id)s AND state IN ('queued', 'running')
