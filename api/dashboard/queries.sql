-- Dashboard reads (api/dashboard/data.py is the only caller). %(tenant)s is NULL for admins, else the
-- caller's consumer id, exactly as in the resource queries.
--
-- Cost rule: a page or a scrape must cost the same with 10 thousand or 100 million deliveries. So every
-- query here reads either a time-bounded range of an index on a timestamp (outbox created_at, attempt
-- started_at, delivery dead_at) or a partial index whose rows are work still open (pending, in flight,
-- awaiting an ack, parked); none counts the delivery table. bench/dashboard.py holds it to that.
--
-- Attempts of some webhooks in a window: the attempt log's index is (webhook_id, id DESC), and ids grow
-- with time, so the window is also given as "id >= the first id started in it" (one step down the
-- started_at index). Both bounds together keep the scan to the window; started_at alone let the planner
-- walk each webhook's whole history (tests/db/test_dashboard_cost.py).

-- name: key_by_id :one
-- The API key behind a dashboard session (the same columns the API's authentication reads).
SELECT k.id, k.prefix, k.consumer_id, k.is_admin, k.scopes,
       (k.revoked_at IS NOT NULL) AS revoked,
       (k.expires_at IS NOT NULL AND k.expires_at <= now()) AS expired,
       c.status AS consumer_status, c.allowed_ips::text[] AS allowed_ips
FROM whk.api_keys k
LEFT JOIN whk.whk_04_assinantes c ON c.id = k.consumer_id
WHERE k.id = %(id)s

-- name: tenant_webhooks :many
SELECT w.id FROM whk.whk_01_webhooks w WHERE w.consumer_id = %(tenant)s::bigint

-- name: series :many
-- Events in (committed to the outbox; for a tenant, its deliveries by event time) and attempts out per
-- bucket over the window. Buckets with nothing are zeros (generate_series), so the chart has no gaps.
WITH buckets AS (
    SELECT generate_series(date_bin(%(bucket)s::interval, %(since)s::timestamptz, 'epoch'),
                           %(until)s::timestamptz, %(bucket)s::interval) AS t
), events_in AS (
    SELECT date_bin(%(bucket)s::interval, o.created_at, 'epoch') AS t, count(*) AS n
    FROM whk.outbox o
    WHERE %(tenant)s::bigint IS NULL AND o.created_at >= %(since)s AND o.created_at < %(until)s
    GROUP BY 1
    UNION ALL
    SELECT date_bin(%(bucket)s::interval, d.event_created_at, 'epoch') AS t, count(*) AS n
    FROM whk.whk_03_entregas d
    WHERE d.consumer_id = %(tenant)s::bigint
      AND d.event_created_at >= %(since)s AND d.event_created_at < %(until)s
    GROUP BY 1
), attempts AS (
    SELECT date_bin(%(bucket)s::interval, t.started_at, 'epoch') AS t,
           count(*) FILTER (WHERE t.outcome IN ('delivered', 'awaiting_ack')) AS ok,
           count(*) FILTER (WHERE t.outcome NOT IN ('delivered', 'awaiting_ack')) AS failed
    FROM whk.window_attempts(%(since)s, %(until)s, %(webhooks)s::bigint[]) t
    GROUP BY 1
)
SELECT extract(epoch FROM b.t)::bigint AS t, coalesce(e.n, 0)::bigint AS events_in,
       coalesce(a.ok, 0) AS delivered, coalesce(a.failed, 0) AS failed
FROM buckets b
LEFT JOIN (SELECT t, sum(n) AS n FROM events_in GROUP BY t) e ON e.t = b.t
LEFT JOIN attempts a ON a.t = b.t
ORDER BY b.t

-- name: attempt_summary :one
-- Attempts started in the window: how many, how many succeeded, and the commit-to-delivery latency of
-- the delivered ones (event commit time = the outbox row's created_at, copied to event_created_at).
-- Each delivery is looked up by primary key from its attempt (OFFSET 0 keeps that a nested loop: a hash
-- join would read the whole delivery table); a finished one only in the history's partitions from the
-- attempt's day on (it finished after its attempt started: run-time partition pruning).
WITH t AS (
    SELECT t.delivery_id, t.outcome, t.started_at
    FROM whk.window_attempts(%(since)s, %(until)s, %(webhooks)s::bigint[]) t
)
SELECT (SELECT count(*) FROM t) AS attempts,
       (SELECT count(*) FROM t WHERE t.outcome IN ('delivered', 'awaiting_ack')) AS succeeded,
       (SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                   ORDER BY extract(epoch FROM d.delivered_at - d.event_created_at) * 1000)
        FROM t
        CROSS JOIN LATERAL (
            SELECT x.delivered_at, x.event_created_at FROM whk.whk_03_entregas x
            WHERE x.id = t.delivery_id AND (x.finished_at IS NULL OR x.finished_at >= t.started_at) OFFSET 0
        ) d
        WHERE t.outcome = 'delivered' AND d.delivered_at IS NOT NULL) AS commit_to_delivery_ms

-- name: backlog :one
-- Open work only (the live queue: dead letters are live rows too), each count from its own partial
-- index (whose size is the backlog, not the history).
-- The oldest due delivery walks the pending index too: it is as big as the backlog.
SELECT
    (SELECT count(*) FROM whk.delivery_queue d
     WHERE d.status = 'pending'
       AND (%(tenant)s::bigint IS NULL OR d.webhook_id = ANY (%(webhooks)s::bigint[]))) AS pending,
    (SELECT count(*) FROM whk.delivery_queue d
     WHERE d.status = 'in_flight'
       AND (%(tenant)s::bigint IS NULL OR d.webhook_id = ANY (%(webhooks)s::bigint[]))) AS in_flight,
    (SELECT count(*) FROM whk.delivery_queue d
     WHERE d.status = 'awaiting_ack' AND d.ack_deadline IS NOT NULL
       AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)) AS awaiting_ack,
    (SELECT count(*) FROM whk.delivery_queue d
     WHERE d.status = 'parked'
       AND (%(tenant)s::bigint IS NULL OR d.webhook_id = ANY (%(webhooks)s::bigint[]))) AS parked,
    (SELECT extract(epoch FROM clock_timestamp() - min(d.next_attempt_at))::float8
     FROM whk.delivery_queue d
     WHERE d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
       AND (%(tenant)s::bigint IS NULL OR d.webhook_id = ANY (%(webhooks)s::bigint[]))) AS oldest_pending_s,
    (SELECT count(*) FROM whk.outbox o
     WHERE %(tenant)s::bigint IS NULL AND o.status = 'pending') AS unrouted,
    (SELECT count(*) FROM whk.delivery_queue d
     WHERE d.status = 'dead' AND d.dead_at >= %(dead_since)s
       AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)) AS dead_24h

-- name: worst_webhooks :many
-- The webhooks with the most failed attempts in the window (then the lowest success share).
SELECT w.id, w.name, w.url, w.status, coalesce(r.breaker_state, 'closed') AS breaker_state,
       a.attempts, a.failed
FROM (
    SELECT t.webhook_id, count(*) AS attempts,
           count(*) FILTER (WHERE t.outcome NOT IN ('delivered', 'awaiting_ack')) AS failed
    FROM whk.window_attempts(%(since)s, %(until)s, %(webhooks)s::bigint[]) t
    GROUP BY t.webhook_id
) a
JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
LEFT JOIN whk.webhook_runtime r ON r.webhook_id = w.id
WHERE a.failed > 0
ORDER BY a.failed DESC, a.failed::float8 / a.attempts DESC, w.id
LIMIT %(limit)s

-- name: firing_alerts :many
-- 'firing' only: pending (not yet confirmed) and resolved alerts are shown on the alerts page.
SELECT a.id, a.name, a.severity, a.state, a.last_triggered_at, a.consumer_id
FROM whk.whk_06_alertas a
WHERE a.enabled AND a.state = 'firing'
  AND (%(tenant)s::bigint IS NULL OR a.consumer_id = %(tenant)s::bigint)
ORDER BY a.last_triggered_at DESC NULLS LAST, a.id
LIMIT 50

-- name: dispatchers :many
SELECT x.id, x.hostname, x.version, x.started_at, x.heartbeat_at, x.idle, x.stopping,
       extract(epoch FROM clock_timestamp() - x.heartbeat_at)::float8 AS heartbeat_age_s
FROM whk.dispatchers x
ORDER BY x.id

-- name: schedules :many
-- The newest run of each scheduled operations job (whk.ops_job_runs, what the API's health reads): late
-- after three periods without a run. pgqueuer's own tables are the worker's: the API role cannot read them.
SELECT DISTINCT ON (r.job) r.job AS entrypoint, r.period_s, r.started_at AS last_run, r.ok,
       (r.started_at < clock_timestamp() - make_interval(secs => 3 * r.period_s)) AS late
FROM whk.ops_job_runs r
ORDER BY r.job, r.started_at DESC

-- name: platform :one
-- Platform-wide figures from whk.kpi_platform, as the alerts read them (only the columns asked for are
-- computed: the view is flattened into this query).
SELECT k.oldest_unrouted_age_s, k.webhooks_disabled, k.breakers_open FROM whk.kpi_platform k

-- name: webhook_rows :many
-- The webhook list, per webhook from the KPI views the alerts read (docs/operations.md): its state
-- (whk.kpi_webhook_state: breaker, failure streak, age of the oldest due delivery) and its last day of
-- attempts (whk.kpi_webhook_window_at(86400), the minute roll-up), so the list, the API and an alert on
-- failure_rate show the same numbers. The page of webhooks is taken first; each KPI is then read for
-- that webhook only (OFFSET 0 keeps each LATERAL a per-row probe of the roll-up's primary key: pulled up
-- into a join, the roll-up of every webhook was aggregated for a page of 100). The backlog count has no
-- KPI view: the pending partial index, per webhook.
WITH page AS MATERIALIZED (
    SELECT w.id, w.consumer_id, w.name, w.url, w.status, w.disabled_reason
    FROM whk.whk_01_webhooks w
    WHERE w.deleted_at IS NULL
      AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)
      AND (%(after_id)s::bigint IS NULL OR w.id > %(after_id)s::bigint)
    ORDER BY w.id
    LIMIT %(limit)s
)
SELECT p.id, p.consumer_id, p.name, p.url, p.status, p.disabled_reason, s.breaker_state,
       s.consecutive_failures, s.oldest_pending_age_s,
       (SELECT count(*) FROM whk.delivery_queue d
        WHERE d.webhook_id = p.id AND d.status = 'pending') AS backlog,
       coalesce(k.attempts, 0) AS attempts, coalesce(k.failures, 0) AS failures, k.latency_p95_ms
FROM page p
CROSS JOIN LATERAL (
    SELECT v.breaker_state, v.consecutive_failures, v.oldest_pending_age_s
    FROM whk.kpi_webhook_state v WHERE v.webhook_id = p.id OFFSET 0
) s
LEFT JOIN LATERAL (
    SELECT x.attempts, x.failures, x.latency_p95_ms
    FROM whk.kpi_webhook_window_at(86400) x WHERE x.webhook_id = p.id OFFSET 0
) k ON true
ORDER BY p.id

-- name: dead_groups :many
-- Dead letters grouped by webhook and reason (the dead-letter index, newest first, within the window).
SELECT d.webhook_id, w.name AS webhook_name, coalesce(d.dead_reason, '') AS reason, count(*) AS n,
       max(d.dead_at) AS last_dead_at, max(d.id) AS last_id
FROM whk.delivery_queue d  -- dead letters are live rows
JOIN whk.whk_01_webhooks w ON w.id = d.webhook_id
WHERE d.status = 'dead' AND d.dead_at >= %(since)s
  AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
GROUP BY d.webhook_id, w.name, coalesce(d.dead_reason, '')
ORDER BY count(*) DESC, d.webhook_id
LIMIT 200

-- name: tail :many
-- The newest events (admin: the outbox; tenant: its own deliveries by event), newest first.
SELECT o.id, o.event_id, o.event_type, o.created_at, o.status, NULL::bigint AS webhook_id
FROM whk.outbox o
WHERE %(tenant)s::bigint IS NULL AND o.created_at >= %(since)s
UNION ALL
SELECT d.outbox_id, d.event_id, d.event_type, d.event_created_at, d.status, d.webhook_id
FROM whk.whk_03_entregas d
WHERE d.consumer_id = %(tenant)s::bigint AND d.event_created_at >= %(since)s
ORDER BY 4 DESC, 1 DESC
LIMIT %(limit)s

-- name: heatmap :many
-- Events by type x (day of week, hour of day) over the window, UTC.
SELECT e.event_type, extract(isodow FROM e.at)::int AS dow, extract(hour FROM e.at)::int AS hour,
       count(*) AS n
FROM (
    SELECT o.event_type, o.created_at AS at FROM whk.outbox o
    WHERE %(tenant)s::bigint IS NULL AND o.created_at >= %(since)s
    UNION ALL
    SELECT d.event_type, d.event_created_at FROM whk.whk_03_entregas d
    WHERE d.consumer_id = %(tenant)s::bigint AND d.event_created_at >= %(since)s
) e
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3

-- name: top_consumers :many
-- Deliveries created per consumer this week and the week before (growth week over week).
SELECT d.consumer_id, c.name,
       count(*) FILTER (WHERE d.created_at >= %(week)s) AS this_week,
       count(*) FILTER (WHERE d.created_at < %(week)s) AS last_week
FROM whk.whk_03_entregas d
JOIN whk.whk_04_assinantes c ON c.id = d.consumer_id
WHERE d.created_at >= %(since)s
  AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
GROUP BY d.consumer_id, c.name
ORDER BY 3 DESC, 1
LIMIT 20

-- name: alerts :many
SELECT a.id, a.consumer_id, a.name, a.severity, a.condition, a.enabled, a.state, a.last_triggered_at,
       a.trigger_count, a.acknowledged_at, a.acknowledged_by, a.silenced_until,
       coalesce(a.silenced_until > now(), false) AS silenced
FROM whk.whk_06_alertas a
WHERE (%(tenant)s::bigint IS NULL OR a.consumer_id = %(tenant)s::bigint)
ORDER BY (a.state = 'ok'), a.id
LIMIT 500

-- name: alert_history :many
-- Activations, newest first, with who acknowledged them; test notifications are marked as such.
SELECT h.id, h.alert_id, a.name, h.severity, h.triggered_at, h.resolved_at, h.value, h.acknowledged_at,
       h.acknowledged_by, coalesce(h.details -> 'test' = 'true'::jsonb, false) AS test
FROM whk.whk_06_alertas_historico h
JOIN whk.whk_06_alertas a ON a.id = h.alert_id
WHERE (%(tenant)s::bigint IS NULL OR a.consumer_id = %(tenant)s::bigint)
ORDER BY h.triggered_at DESC, h.id DESC
LIMIT 100
