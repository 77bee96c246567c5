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

-- The roll-up rereads the last minutes of the attempt log by time through the attempt log's btree on
-- started_at (sql/schema/700_api_resources.sql); a second, BRIN index on the same column led the planner
-- into lossy scans that read more rows as history grew.

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
    ('webhook_needs_secret', 'Webhook waiting for its signing secret',
     'A webhook has had no signing secret for 5 minutes: its deliveries wait (never sent unsigned). Is the '
     'job worker running, with WHK_SECRET_KEYS? `whk webhooks provision-secrets` gives them one by hand.',
     'warning',
     '{"metric": "webhooks_needs_secret", "operator": ">", "threshold": 0, "window_s": 300}', 300, 3600),
    ('breaker_open', 'Breaker open for more than 10 minutes',
     'A webhook''s circuit breaker has been open for more than 10 minutes.', 'warning',
     '{"metric": "breaker_open_s", "operator": ">", "threshold": 600, "window_s": 300}', 0, 3600);
