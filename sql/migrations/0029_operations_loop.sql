-- 0029 operations_loop: alerts that fire and notify (state machine, channels), SLOs, KPI roll-up and views.
-- Why: alert rows were stored but never evaluated or sent. The pgqueuer worker (ops/) now evaluates the
-- rules on a schedule from the KPI views below and sends notifications as retried jobs. Adds the rule's
-- evaluation state, encrypted channels, SLO objects, the per-minute attempt roll-up (so alert windows cost
-- the same with 10k or 1M attempts), a BRIN index on attempt start times, job run records and the
-- built-in default rules.
BEGIN;
SELECT whk.migration_begin(29, 'operations_loop');

-- The operations loop (alerts that fire and notify, SLOs, KPI roll-ups, job runs; see docs/operations.md).

-- Alert rules keep their evaluation state so the worker can walk ok -> pending -> firing -> resolved
-- (a transition, not a poll-time guess): one slow request does not page anyone (for_s), a firing rule
-- notifies once and then at most every throttle_seconds, escalation steps fire while unacknowledged.
ALTER TABLE whk.whk_06_alertas DROP CONSTRAINT whk_06_alertas_state_check;
ALTER TABLE whk.whk_06_alertas
    ADD CONSTRAINT whk_06_alertas_state_check CHECK (state IN ('ok', 'pending', 'firing', 'resolved')),
    -- How long the condition must hold before pending becomes firing (Prometheus' `for:`).
    ADD COLUMN for_s             integer     NOT NULL DEFAULT 60 CHECK (for_s BETWEEN 0 AND 86400),
    ADD COLUMN pending_since     timestamptz,
    ADD COLUMN firing_since      timestamptz,
    ADD COLUMN last_value        double precision,
    ADD COLUMN last_evaluated_at timestamptz,
    ADD COLUMN last_notified_at  timestamptz,
    -- Escalation steps already notified in the current activation.
    ADD COLUMN escalation_step   integer     NOT NULL DEFAULT 0 CHECK (escalation_step BETWEEN 0 AND 10),
    ADD COLUMN acknowledged_at   timestamptz,
    ADD COLUMN acknowledged_by   text        CHECK (length(acknowledged_by) <= 200),
    -- Whether the channels paged in this activation have been told of the acknowledgement.
    ADD COLUMN ack_notified      boolean     NOT NULL DEFAULT false,
    ADD COLUMN silenced_until    timestamptz,
    -- Channels paged in the current activation: the resolve goes to exactly these.
    ADD COLUMN paged_channels    bigint[]    NOT NULL DEFAULT '{}',
    ADD COLUMN history_id        bigint      REFERENCES whk.whk_06_alertas_historico (id) ON DELETE SET NULL,
    -- Built-in default rules carry a key so seeding them is idempotent; NULL for user rules.
    ADD COLUMN builtin           text        UNIQUE CHECK (builtin ~ '^[a-z_]{1,64}$');
ALTER TABLE whk.whk_06_alertas ADD CONSTRAINT whk_06_alertas_throttle_max CHECK (throttle_seconds <= 86400);
-- The numbers inside the jsonb columns have bounds too (the API's are narrower): a finite threshold,
-- windows of 60 s to 30 days (or null), escalation steps with after_s of 0 to 7 days and a channel list. A value of
-- the wrong JSON type fails the filter, so it is refused rather than cast.
ALTER TABLE whk.whk_06_alertas
    ADD CONSTRAINT whk_06_alertas_threshold_check
        CHECK (jsonb_path_exists(condition, '$.threshold ? (@.type() == "number" && @ >= -1e12 && @ <= 1e12)')),
    ADD CONSTRAINT whk_06_alertas_windows_check
        CHECK (NOT jsonb_path_exists(condition,
               '$.keyvalue() ? (@.key == "window_s" || @.key == "long_window_s" || @.key == "short_window_s")'
               ' ? (@.value.type() != "number" && @.value.type() != "null"'
               ' || @.value < 60 || @.value > 2592000)')),
    -- The evaluator casts these ids to bigint: a malformed one would stop every rule's evaluation.
    ADD CONSTRAINT whk_06_alertas_ids_check
        CHECK (NOT jsonb_path_exists(condition,
               '$.keyvalue() ? (@.key == "webhook_id" || @.key == "slo_id")'
               ' ? (@.value.type() != "number" && @.value.type() != "null"'
               ' || @.value < 1 || @.value > 9223372036854775807)')),
    ADD CONSTRAINT whk_06_alertas_escalation_steps_check
        CHECK (NOT jsonb_path_exists(escalation,
               '$[*] ? (!exists(@.after_s ? (@.type() == "number" && @ >= 0 && @ <= 604800))'
               ' || !exists(@.channels.type() ? (@ == "array")))'));
CREATE INDEX whk_06_alertas_enabled_idx ON whk.whk_06_alertas (id) WHERE enabled;

ALTER TABLE whk.whk_06_alertas_historico
    ADD COLUMN severity        text,
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text;

-- Where alerts notify. The target (Slack URL, PagerDuty routing key, webhook URL, e-mail address) and the
-- secret (webhook signing secret, SMTP password) are encrypted at rest with whk/secretbox.py, bound to the
-- row (AAD alert_channels:<id>), like webhook signing secrets; `display` is a masked form for the API.
CREATE TABLE whk.alert_channels (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id bigint      REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    type        text        NOT NULL CHECK (type IN ('webhook', 'slack', 'pagerduty', 'email')),
    target_enc  bytea       NOT NULL,
    secret_enc  bytea,
    -- Non-secret settings (e-mail: smtp_host, smtp_port, smtp_username, smtp_from, starttls).
    config      jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    display     text        NOT NULL CHECK (length(display) <= 300),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE whk.alert_channels IS 'Alert notification channels; targets and secrets encrypted at rest.';

-- Service level objectives over the attempt roll-up: success ratio of delivery attempts of one webhook,
-- one consumer, or everything, over a rolling window.
CREATE TABLE whk.slos (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id bigint      REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    webhook_id  bigint      REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- A floor and a ceiling: 1 - objective is the error budget and must not underflow to 0.
    objective   double precision NOT NULL CHECK (objective BETWEEN 0.5 AND 0.9999),
    window_days integer     NOT NULL DEFAULT 30 CHECK (window_days BETWEEN 1 AND 30),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE whk.slos IS 'Service level objectives (success ratio of delivery attempts over a window).';

-- Attempts per webhook and minute, rebuilt for the last few minutes by the kpi_rollup job (whk.kpi_rollup).
-- Alert windows and SLO windows read this, so evaluating them costs the same with 10 thousand or 1 million
-- attempts in the window. Latency is a cumulative histogram like Prometheus' `le` buckets.
CREATE TABLE whk.kpi_webhook_minute (
    webhook_id   bigint      NOT NULL,
    minute       timestamptz NOT NULL,
    consumer_id  bigint      NOT NULL,
    attempts     integer     NOT NULL,
    failures     integer     NOT NULL,
    retries      integer     NOT NULL,
    dead         integer     NOT NULL,
    -- Attempts with a measured duration; lat_le_X counts those that took at most X ms (cumulative).
    timed        integer     NOT NULL,
    lat_le_25    integer     NOT NULL,
    lat_le_100   integer     NOT NULL,
    lat_le_250   integer     NOT NULL,
    lat_le_500   integer     NOT NULL,
    lat_le_1000  integer     NOT NULL,
    lat_le_2500  integer     NOT NULL,
    lat_le_5000  integer     NOT NULL,
    lat_le_10000 integer     NOT NULL,
    lat_max_ms   double precision,
    PRIMARY KEY (webhook_id, minute)
);
CREATE INDEX kpi_webhook_minute_minute_idx ON whk.kpi_webhook_minute (minute);
COMMENT ON TABLE whk.kpi_webhook_minute IS 'Delivery attempts per webhook and minute (roll-up of the attempt log).';

-- The roll-up rereads the last minutes of the attempt log by time: a BRIN index is enough for an
-- append-only, time-ordered table and costs the delivery path almost nothing on insert.
CREATE INDEX whk_03_entregas_tentativas_started_brin
    ON whk.whk_03_entregas_tentativas USING brin (started_at);

-- One row per run of a scheduled job (alert evaluation, roll-up, partitions): `whk jobs` and the API's
-- health read the newest per job to name a scheduler that stopped.
CREATE TABLE whk.ops_job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text        NOT NULL CHECK (length(job) BETWEEN 1 AND 100),
    period_s    integer     NOT NULL CHECK (period_s > 0),
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    ok          boolean,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX ops_job_runs_job_idx ON whk.ops_job_runs (job, started_at DESC);
COMMENT ON TABLE whk.ops_job_runs IS 'Runs of scheduled operations jobs (pgqueuer schedules), newest kept a day.';

-- Built-in rules (docs/operations.md has a runbook line for each). Global, no channels: `whk up` adds the
-- demo channel; operators add theirs through the API.
INSERT INTO whk.whk_06_alertas (builtin, name, description, severity, condition, for_s, throttle_seconds)
VALUES
    ('no_live_dispatcher', 'No live dispatcher',
     'No dispatcher has sent a heartbeat within the lease: nothing is being delivered.', 'critical',
     '{"metric": "live_dispatchers", "operator": "<", "threshold": 1, "window_s": 300}', 30, 1800),
    ('backlog_old', 'Backlog older than 5 minutes',
     'The oldest due delivery has waited more than 5 minutes.', 'warning',
     '{"metric": "pending_age_s", "operator": ">", "threshold": 300, "window_s": 300}', 60, 1800),
    ('dead_letters', 'Dead letters appearing',
     'Deliveries were dead-lettered in the last 5 minutes.', 'warning',
     '{"metric": "dead_letters", "operator": ">", "threshold": 0, "window_s": 300}', 0, 3600),
    ('webhook_disabled', 'Webhook auto-disabled',
     'A webhook is disabled (auto-disabled after failing without a success, or by hand).', 'warning',
     '{"metric": "webhooks_disabled", "operator": ">", "threshold": 0, "window_s": 300}', 0, 86400),
    ('breaker_open', 'Breaker open for more than 10 minutes',
     'A webhook''s circuit breaker has been open for more than 10 minutes.', 'warning',
     '{"metric": "breaker_open_s", "operator": ">", "threshold": 600, "window_s": 300}', 0, 3600);

-- Queue one alert notification job (pgqueuer entrypoint 'notify') in the caller's transaction. The API and
-- the worker reach pgqueuer's table only through this function (SECURITY DEFINER), so their roles need no
-- grant on it. A notice already queued or running under the same dedupe key is not queued twice (the
-- unique index's predicate is restated, as ON CONFLICT requires); returns the job id, or NULL then.
CREATE OR REPLACE FUNCTION whk.enqueue_notice(p_payload bytea, p_dedupe_key text)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
    VALUES (0, 'notify', p_payload, 'queued', p_dedupe_key)
    ON CONFLICT (dedupe_key) WHERE (status IN ('queued', 'picked') AND dedupe_key IS NOT NULL) DO NOTHING
    RETURNING id
$$;

-- Rebuild the last p_horizon_s seconds of whk.kpi_webhook_minute from the attempt log and the dead letters,
-- and forget minutes older than 31 days (the longest SLO window is 30). Run by the worker before each
-- alert evaluation. The horizon is how late an attempt may be recorded and still be counted: the dispatcher
-- writes attempts within seconds of their start, so the default 5 minutes leaves a wide margin.
-- Reading by time goes through the BRIN index on started_at and the dead-letter index, so the cost follows
-- the traffic of the horizon, not the size of the log. Returns the number of minute rows written.
CREATE OR REPLACE FUNCTION whk.kpi_rollup(p_horizon_s integer DEFAULT 300)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_from timestamptz;
    v_rows integer;
BEGIN
    IF p_horizon_s IS NULL OR p_horizon_s NOT BETWEEN 60 AND 86400 THEN
        RAISE EXCEPTION 'kpi_rollup horizon % is out of range', p_horizon_s
            USING HINT = 'pass 60 to 86400 seconds: how far back attempts may still be recorded late';
    END IF;
    -- Two roll-ups at once would delete and insert the same minutes: the second one waits.
    PERFORM pg_advisory_xact_lock(hashtext('whk.kpi_rollup'));
    v_from := date_trunc('minute', clock_timestamp() - make_interval(secs => p_horizon_s));
    DELETE FROM whk.kpi_webhook_minute m WHERE m.minute >= v_from;
    DELETE FROM whk.kpi_webhook_minute m WHERE m.minute < clock_timestamp() - interval '31 days';
    INSERT INTO whk.kpi_webhook_minute (webhook_id, minute, consumer_id, attempts, failures, retries, dead, timed,
                                        lat_le_25, lat_le_100, lat_le_250, lat_le_500, lat_le_1000, lat_le_2500,
                                        lat_le_5000, lat_le_10000, lat_max_ms)
    SELECT webhook_id, minute, w.consumer_id,
           coalesce(a.attempts, 0), coalesce(a.failures, 0), coalesce(a.retries, 0), coalesce(k.dead, 0),
           coalesce(a.timed, 0), coalesce(a.le_25, 0), coalesce(a.le_100, 0), coalesce(a.le_250, 0),
           coalesce(a.le_500, 0), coalesce(a.le_1000, 0), coalesce(a.le_2500, 0), coalesce(a.le_5000, 0),
           coalesce(a.le_10000, 0), a.max_ms
    FROM (
        SELECT t.webhook_id, date_trunc('minute', t.started_at) AS minute,
               count(*) AS attempts,
               -- The dispatcher's failure kinds (dispatcher/breaker.py): these count against the endpoint.
               count(*) FILTER (WHERE t.outcome IN ('retry', 'throttle', 'blocked')) AS failures,
               count(*) FILTER (WHERE t.attempt_no > 1) AS retries,
               count(t.duration_ms) AS timed,
               count(*) FILTER (WHERE t.duration_ms <= 25) AS le_25,
               count(*) FILTER (WHERE t.duration_ms <= 100) AS le_100,
               count(*) FILTER (WHERE t.duration_ms <= 250) AS le_250,
               count(*) FILTER (WHERE t.duration_ms <= 500) AS le_500,
               count(*) FILTER (WHERE t.duration_ms <= 1000) AS le_1000,
               count(*) FILTER (WHERE t.duration_ms <= 2500) AS le_2500,
               count(*) FILTER (WHERE t.duration_ms <= 5000) AS le_5000,
               count(*) FILTER (WHERE t.duration_ms <= 10000) AS le_10000,
               max(t.duration_ms) AS max_ms
        FROM whk.whk_03_entregas_tentativas t
        WHERE t.started_at >= v_from
        GROUP BY 1, 2
    ) a
    FULL JOIN (
        SELECT d.webhook_id, date_trunc('minute', d.dead_at) AS minute, count(*) AS dead
        FROM whk.whk_03_entregas d
        WHERE d.status = 'dead' AND d.dead_at >= v_from
        GROUP BY 1, 2
    ) k USING (webhook_id, minute)
    -- webhook_id and minute are the merged columns of the USING join (either side may be missing).
    JOIN whk.whk_01_webhooks w ON w.id = webhook_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END;
$$;

-- The latency quantile p_q estimated from cumulative histogram counts (whk.kpi_webhook_minute's lat_le_*,
-- summed): the smallest bucket bound holding at least p_q of the timed attempts, else the largest duration
-- seen. Like Prometheus' histogram_quantile, an upper bound of the true value, never an underestimate.
CREATE OR REPLACE FUNCTION whk.kpi_latency_bound(p_q double precision, p_le bigint[], p_timed bigint,
                                                 p_max double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN coalesce(p_timed, 0) = 0 THEN NULL ELSE coalesce(
        (SELECT b.bound
         FROM unnest(ARRAY[25, 100, 250, 500, 1000, 2500, 5000, 10000]::double precision[], p_le) AS b(bound, n)
         WHERE b.n >= p_q * p_timed
         ORDER BY b.bound
         LIMIT 1),
        p_max) END
$$;

-- Attempt KPIs of each webhook over the last p_window_s seconds, from the minute roll-up
-- (whk.kpi_webhook_minute): the window starts at the minute that contains now() - p_window_s.
-- Plain LANGUAGE sql without SET so PostgreSQL inlines it: a caller's WHERE webhook_id = ... reaches the
-- roll-up's primary key. Alert evaluation calls it with each rule's window; whk.kpi_webhook_window is it
-- at the standard windows.
CREATE OR REPLACE FUNCTION whk.kpi_webhook_window_at(p_window_s integer)
RETURNS TABLE (webhook_id bigint, consumer_id bigint, window_s integer, attempts bigint, failures bigint,
               retries bigint, dead_letters bigint, failure_rate double precision, retry_rate double precision,
               latency_p95_ms double precision, timed bigint, lat_le bigint[], lat_max_ms double precision)
LANGUAGE sql
STABLE
AS $$
    SELECT m.webhook_id, min(m.consumer_id), p_window_s, sum(m.attempts)::bigint, sum(m.failures)::bigint,
           sum(m.retries)::bigint, sum(m.dead)::bigint,
           sum(m.failures)::double precision / nullif(sum(m.attempts), 0),
           sum(m.retries)::double precision / nullif(sum(m.attempts), 0),
           whk.kpi_latency_bound(0.95,
               ARRAY[sum(m.lat_le_25), sum(m.lat_le_100), sum(m.lat_le_250), sum(m.lat_le_500),
                     sum(m.lat_le_1000), sum(m.lat_le_2500), sum(m.lat_le_5000), sum(m.lat_le_10000)]::bigint[],
               sum(m.timed)::bigint, max(m.lat_max_ms)),
           sum(m.timed)::bigint,
           ARRAY[sum(m.lat_le_25), sum(m.lat_le_100), sum(m.lat_le_250), sum(m.lat_le_500),
                 sum(m.lat_le_1000), sum(m.lat_le_2500), sum(m.lat_le_5000), sum(m.lat_le_10000)]::bigint[],
           max(m.lat_max_ms)
    FROM whk.kpi_webhook_minute m
    WHERE m.minute >= date_trunc('minute', clock_timestamp() - make_interval(secs => p_window_s))
    GROUP BY m.webhook_id
$$;

-- The error ratio (failed attempts / attempts) of SLO p_slo_id's scope over the last p_window_s seconds,
-- from the minute roll-up; NULL when nothing was attempted. Divided by the error budget (1 - objective)
-- it is the burn rate: 1 spends the budget exactly over the SLO window, 14.4 spends 2 % of a 30-day
-- budget in one hour (Google SRE workbook, ch. 5). Plain LANGUAGE sql so it inlines into its callers.
CREATE OR REPLACE FUNCTION whk.slo_error_ratio(p_slo_id bigint, p_window_s integer)
RETURNS double precision
LANGUAGE sql
STABLE
AS $$
    SELECT sum(m.failures)::double precision / nullif(sum(m.attempts), 0)
    FROM whk.slos s
    JOIN whk.kpi_webhook_minute m
      ON (s.webhook_id IS NULL OR m.webhook_id = s.webhook_id)
     AND (s.consumer_id IS NULL OR m.consumer_id = s.consumer_id)
    WHERE s.id = p_slo_id
      AND m.minute >= date_trunc('minute', clock_timestamp() - make_interval(secs => p_window_s))
$$;

-- whk.kpi_webhook_window: attempt KPIs per webhook over the standard windows (5 minutes, 1 hour, 1 day):
-- attempts, failures (retry/throttle/blocked outcomes), failure_rate, retries, retry_rate, dead letters,
-- p95 latency (histogram bound). A supported interface (docs/operations.md): the dashboard, Prometheus and
-- the alerts read these numbers. Other windows: whk.kpi_webhook_window_at(seconds).
CREATE OR REPLACE VIEW whk.kpi_webhook_window AS
SELECT k.webhook_id, k.consumer_id, k.window_s, k.attempts, k.failures, k.failure_rate, k.retries,
       k.retry_rate, k.dead_letters, k.latency_p95_ms
FROM unnest(ARRAY[300, 3600, 86400]) AS s(window_s)
CROSS JOIN LATERAL whk.kpi_webhook_window_at(s.window_s) AS k;
COMMENT ON VIEW whk.kpi_webhook_window IS
    'Attempt KPIs per webhook over 5 min, 1 h and 1 day (from whk.kpi_webhook_minute).';

-- whk.kpi_webhook_state: the current state of each webhook (not deleted): status, breaker, how long the
-- breaker has been open, the failure streak and the age of its oldest due delivery. Each figure is one
-- index probe per webhook (the due index gives the oldest pending delivery), whatever the backlog.
CREATE OR REPLACE VIEW whk.kpi_webhook_state AS
SELECT w.id AS webhook_id, w.consumer_id, w.status,
       coalesce(r.breaker_state, 'closed') AS breaker_state,
       CASE WHEN r.breaker_state = 'open'
            THEN extract(epoch FROM clock_timestamp() - r.opened_at)::double precision END AS breaker_open_s,
       coalesce(r.consecutive_failures, 0) AS consecutive_failures,
       greatest(extract(epoch FROM clock_timestamp() - p.next_attempt_at)::double precision, 0)
           AS oldest_pending_age_s
FROM whk.whk_01_webhooks w
LEFT JOIN whk.webhook_runtime r ON r.webhook_id = w.id
LEFT JOIN LATERAL (
    SELECT d.next_attempt_at FROM whk.whk_03_entregas d
    WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
    ORDER BY d.next_attempt_at
    LIMIT 1
) p ON true
WHERE w.deleted_at IS NULL;
COMMENT ON VIEW whk.kpi_webhook_state IS
    'Per-webhook state: status, breaker (and seconds open), failure streak, oldest due delivery age.';

-- whk.kpi_dispatchers: dispatcher processes and the age of their last heartbeat. A dispatcher is live while
-- heartbeat_age_s is within WHK_LEASE_SECONDS and it is not stopping (the lease is a process setting, so
-- readers apply it).
CREATE OR REPLACE VIEW whk.kpi_dispatchers AS
SELECT x.id, x.hostname, x.pid, x.started_at, x.stopping,
       extract(epoch FROM clock_timestamp() - x.heartbeat_at)::double precision AS heartbeat_age_s
FROM whk.dispatchers x;
COMMENT ON VIEW whk.kpi_dispatchers IS 'Dispatcher processes with the age of their last heartbeat.';

-- whk.kpi_platform: one row of platform-wide figures: how long the oldest unrouted outbox event has waited
-- (capture stalled: the dispatcher routes events into deliveries), webhooks disabled, breakers open.
-- The oldest unrouted event is found through the pending index in id order (ids follow commit order
-- closely enough for an age alarm).
CREATE OR REPLACE VIEW whk.kpi_platform AS
SELECT (SELECT greatest(extract(epoch FROM clock_timestamp() - o.created_at)::double precision, 0)
        FROM whk.outbox o WHERE o.status = 'pending' ORDER BY o.id LIMIT 1) AS oldest_unrouted_age_s,
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.status = 'disabled' AND w.deleted_at IS NULL) AS webhooks_disabled,
       (SELECT count(*) FROM whk.webhook_runtime r WHERE r.breaker_state = 'open') AS breakers_open;
COMMENT ON VIEW whk.kpi_platform IS 'Platform-wide figures: oldest unrouted event age, disabled webhooks, open breakers.';

-- whk.kpi_slo: each SLO over its window: attempts, failed attempts, compliance (success ratio), the error
-- budget (failures the objective allows), how much of it is left (1 = untouched, 0 = spent, negative =
-- overspent), and the burn rate over the windows of the multi-window alerts (5 min ... 3 days).
-- error_budget = (1 - objective) x attempts; budget_remaining = 1 - failures / error_budget;
-- burn_rate_<w> = error ratio over <w> / (1 - objective).
CREATE OR REPLACE VIEW whk.kpi_slo AS
SELECT s.id AS slo_id, s.consumer_id, s.webhook_id, s.name, s.objective, s.window_days,
       a.attempts, a.failures,
       1 - a.failures::double precision / nullif(a.attempts, 0) AS compliance,
       (1 - s.objective) * a.attempts AS error_budget,
       1 - a.failures / nullif((1 - s.objective) * a.attempts, 0) AS budget_remaining,
       whk.slo_error_ratio(s.id, 300) / (1 - s.objective) AS burn_rate_5m,
       whk.slo_error_ratio(s.id, 1800) / (1 - s.objective) AS burn_rate_30m,
       whk.slo_error_ratio(s.id, 3600) / (1 - s.objective) AS burn_rate_1h,
       whk.slo_error_ratio(s.id, 7200) / (1 - s.objective) AS burn_rate_2h,
       whk.slo_error_ratio(s.id, 21600) / (1 - s.objective) AS burn_rate_6h,
       whk.slo_error_ratio(s.id, 86400) / (1 - s.objective) AS burn_rate_1d,
       whk.slo_error_ratio(s.id, 259200) / (1 - s.objective) AS burn_rate_3d
FROM whk.slos s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(m.attempts), 0)::bigint AS attempts, coalesce(sum(m.failures), 0)::bigint AS failures
    FROM whk.kpi_webhook_minute m
    WHERE m.minute >= date_trunc('minute', clock_timestamp() - make_interval(days => s.window_days))
      AND (s.webhook_id IS NULL OR m.webhook_id = s.webhook_id)
      AND (s.consumer_id IS NULL OR m.consumer_id = s.consumer_id)
) a;
COMMENT ON VIEW whk.kpi_slo IS 'SLO compliance, error budget left and burn rates (from whk.kpi_webhook_minute).';

COMMIT;
