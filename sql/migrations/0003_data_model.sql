-- 0003 data_model: the six seed tables (whk_01 … whk_06), the outbox, attempts, signing secrets and
-- dispatcher heartbeats. Readable per-table sources: sql/schema/1xx_*.sql (kept equal by the drift test).
BEGIN;
SELECT whk.migration_begin(3, 'data_model');

-- ===== 100_whk_04_assinantes.sql
-- Consumers (assinantes): the tenant. Every webhook, delivery and API key belongs to one consumer.
CREATE TABLE whk.whk_04_assinantes (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description             text,
    contact_name            text,
    contact_email           text        CHECK (contact_email IS NULL OR contact_email ~ '^[^@\s]+@[^@\s]+$'),
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'suspended', 'disabled')),
    -- Authentication settings for the API (key scopes, JWT subject mapping); never secrets.
    auth_settings           jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(auth_settings) = 'object'),
    -- Source addresses allowed to call the API for this consumer; empty = any.
    allowed_ips             cidr[]      NOT NULL DEFAULT '{}',
    -- Outbound delivery limits shared by all of the consumer's webhooks (NULL = unlimited).
    rate_limit_per_second   numeric     CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second > 0),
    rate_limit_burst        integer     CHECK (rate_limit_burst IS NULL OR rate_limit_burst > 0),
    -- Inbound API limit per minute (NULL = the global default in whk_05_configuracoes).
    api_rate_limit_per_minute integer   CHECK (api_rate_limit_per_minute IS NULL OR api_rate_limit_per_minute > 0),
    quota_deliveries_per_day bigint     CHECK (quota_deliveries_per_day IS NULL OR quota_deliveries_per_day > 0),
    delivery_preferences    jsonb       NOT NULL DEFAULT '{}'::jsonb
                                        CHECK (jsonb_typeof(delivery_preferences) = 'object'),
    metadata                jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    -- Activity and usage, maintained in aggregate by the dispatcher (never per row in ERP commits).
    last_activity_at        timestamptz,
    usage_deliveries_total  bigint      NOT NULL DEFAULT 0,
    usage_deliveries_failed bigint      NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whk_04_assinantes_name_key UNIQUE (name)
);
COMMENT ON TABLE whk.whk_04_assinantes IS 'Consumers (tenants) with their auth settings, limits, quotas and usage.';

-- ===== 110_whk_01_webhooks.sql
-- Webhooks: one HTTP endpoint of a consumer, the event types it subscribes to and how to deliver them.
CREATE TABLE whk.whk_01_webhooks (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id           bigint      NOT NULL REFERENCES whk.whk_04_assinantes (id),
    name                  text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description           text,
    url                   text        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    http_method           text        NOT NULL DEFAULT 'POST' CHECK (http_method IN ('POST', 'PUT', 'PATCH')),
    -- Exact types ('order.created'), prefix wildcards ('order.*') or '*'.
    event_types           text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    -- Optional SQL/JSON path predicate over the event envelope, e.g. '$.data.new.total > 100'.
    -- The jsonpath type means PostgreSQL itself validates the expression on write.
    filter                jsonpath,
    -- Subscribe to a payload schema major version (NULL = whatever the event carries).
    payload_version       integer     CHECK (payload_version IS NULL OR payload_version > 0),
    headers               jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
    -- Outbound authentication; the credential itself is AES-GCM encrypted (row id as associated data).
    auth_type             text        NOT NULL DEFAULT 'none'
                                      CHECK (auth_type IN ('none', 'api_key', 'bearer', 'basic')),
    auth_header_name      text,
    auth_credential_enc   bytea,
    status                text        NOT NULL DEFAULT 'active'
                                      CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason       text,
    disabled_at           timestamptz,
    delivery_mode         text        NOT NULL DEFAULT 'immediate'
                                      CHECK (delivery_mode IN ('immediate', 'batch', 'delayed', 'ordered')),
    batch_size            integer     NOT NULL DEFAULT 100 CHECK (batch_size BETWEEN 1 AND 1000),
    batch_window_ms       integer     NOT NULL DEFAULT 1000 CHECK (batch_window_ms BETWEEN 0 AND 3600000),
    delay_seconds         integer     NOT NULL DEFAULT 0 CHECK (delay_seconds BETWEEN 0 AND 2592000),
    -- Ordered mode: FIFO per (webhook, key); the key is the event key unless this path picks another.
    ordering_key_path     jsonpath,
    retry_policy          jsonb       CHECK (retry_policy IS NULL OR jsonb_typeof(retry_policy) = 'object'),
    timeout_ms            integer     NOT NULL DEFAULT 15000 CHECK (timeout_ms BETWEEN 100 AND 120000),
    rate_limit_per_second numeric     CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second > 0),
    rate_limit_burst      integer     CHECK (rate_limit_burst IS NULL OR rate_limit_burst > 0),
    max_in_flight         integer     NOT NULL DEFAULT 10 CHECK (max_in_flight BETWEEN 1 AND 1000),
    -- Explicit confirmation: a 202 leaves the delivery awaiting_ack until acked or the timeout retries it.
    require_ack           boolean     NOT NULL DEFAULT false,
    ack_timeout_seconds   integer     NOT NULL DEFAULT 3600 CHECK (ack_timeout_seconds > 0),
    breaker_config        jsonb       CHECK (breaker_config IS NULL OR jsonb_typeof(breaker_config) = 'object'),
    metadata              jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
COMMENT ON TABLE whk.whk_01_webhooks IS
    'Webhook endpoints: URL and method, subscribed types, auth, filters, status and delivery settings.';
COMMENT ON COLUMN whk.whk_01_webhooks.deleted_at IS
    'Soft delete: deliveries keep their webhook for history; routing ignores deleted webhooks.';

CREATE INDEX whk_01_webhooks_consumer_idx ON whk.whk_01_webhooks (consumer_id, id);
-- Routing reads active webhooks on every batch; this keeps that read tiny.
CREATE INDEX whk_01_webhooks_active_idx ON whk.whk_01_webhooks (id) INCLUDE (event_types)
    WHERE status = 'active' AND deleted_at IS NULL;

-- ===== 120_webhook_secrets.sql
-- Signing secrets of a webhook: the current one (expires_at NULL) plus old ones inside their grace period.
CREATE TABLE whk.webhook_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  bigint      NOT NULL REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    key_id      text        NOT NULL CHECK (key_id ~ '^key_[A-Za-z0-9]{8,64}$'),
    -- AES-GCM ciphertext (key id inside), associated data = this row's id: never the plaintext.
    secret_enc  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    CONSTRAINT webhook_secrets_key_id_key UNIQUE (key_id)
);
COMMENT ON TABLE whk.webhook_secrets IS
    'Webhook signing secrets (whsec_). Deliveries sign with every row whose expires_at is NULL or in the future.';
CREATE INDEX webhook_secrets_webhook_idx ON whk.webhook_secrets (webhook_id, created_at DESC);

-- ===== 130_whk_02_eventos.sql
-- Event types (eventos): the catalog of what can be emitted, with delivery settings and firing history.
CREATE TABLE whk.whk_02_eventos (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    description       text        NOT NULL DEFAULT '',
    category          text        NOT NULL DEFAULT 'custom',
    -- strict: payloads are validated in the emitting transaction (invalid = RAISE); otherwise downstream.
    strict            boolean     NOT NULL DEFAULT false,
    current_major     integer     NOT NULL DEFAULT 1 CHECK (current_major > 0),
    current_minor     integer     NOT NULL DEFAULT 0 CHECK (current_minor >= 0),
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    delivery_settings jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(delivery_settings) = 'object'),
    -- Firing history, maintained in aggregate by the router (not per row inside ERP transactions).
    fire_count        bigint      NOT NULL DEFAULT 0,
    last_fired_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whk_02_eventos_name_key UNIQUE (name)
);
COMMENT ON TABLE whk.whk_02_eventos IS 'Event type catalog: name, description, strictness, versions, counters.';

-- One row per published schema version of an event type (JSON Schema draft 2020-12).
CREATE TABLE whk.whk_02_eventos_versoes (
    event_type_id bigint      NOT NULL REFERENCES whk.whk_02_eventos (id) ON DELETE CASCADE,
    major         integer     NOT NULL CHECK (major > 0),
    minor         integer     NOT NULL CHECK (minor >= 0),
    schema        jsonb       NOT NULL CHECK (jsonb_typeof(schema) = 'object'),
    changelog     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type_id, major, minor)
);
COMMENT ON TABLE whk.whk_02_eventos_versoes IS 'Schema versions per event type; minor = additive, major = breaking.';

-- ===== 140_outbox.sql
-- The outbox: one row per captured change or emitted event, written in the ERP's own transaction.
-- Range-partitioned by created_at so old data leaves by dropping partitions (see docs/capture.md);
-- the default partition guarantees an insert never fails for lack of a partition.
CREATE TABLE whk.outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    event_id         uuid        NOT NULL DEFAULT gen_random_uuid(),
    event_type       text        NOT NULL,
    event_version    integer     NOT NULL DEFAULT 1,
    event_key        text,
    payload          jsonb       NOT NULL,
    source_table     text,
    operation        text        NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'EMIT')),
    txid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    deliver_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Routing state: claimed by status, never by an id watermark (ids are taken before commit).
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'routed', 'invalid')),
    routed_at        timestamptz,
    -- Assigned when routed, in the order events become visible: the commit order seen by WHK.
    commit_seq       bigint,
    valid            boolean,
    validation_error text,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
COMMENT ON TABLE whk.outbox IS
    'Transactional outbox: rollback = no row, commit = event. Routed into whk_03_entregas by the dispatcher.';

CREATE TABLE whk.outbox_default PARTITION OF whk.outbox DEFAULT;

CREATE SEQUENCE whk.outbox_commit_seq AS bigint;

-- The router's claim: oldest pending first.
CREATE INDEX outbox_pending_idx ON whk.outbox (id) WHERE status = 'pending';
CREATE INDEX outbox_event_id_idx ON whk.outbox (event_id);
CREATE INDEX outbox_type_created_idx ON whk.outbox (event_type, created_at);

-- ===== 150_whk_03_entregas.sql
-- Deliveries (entregas): one row per (event, webhook), its state machine and retry bookkeeping.
CREATE TABLE whk.whk_03_entregas (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid        NOT NULL,
    outbox_id        bigint      NOT NULL,
    event_created_at timestamptz NOT NULL,
    event_type       text        NOT NULL,
    webhook_id       bigint      NOT NULL REFERENCES whk.whk_01_webhooks (id),
    consumer_id      bigint      NOT NULL REFERENCES whk.whk_04_assinantes (id),
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'in_flight', 'awaiting_ack', 'delivered',
                                                   'dead', 'parked', 'cancelled')),
    -- Ordered mode: FIFO per (webhook_id, ordering_key) by commit_seq.
    ordering_key     text,
    commit_seq       bigint,
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    claimed_by       text,
    batch_id         uuid,
    last_status_code integer,
    last_error       text,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    ack_deadline     timestamptz,
    acked_at         timestamptz,
    dead_at          timestamptz,
    dead_reason      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whk_03_entregas_event_webhook_key UNIQUE (event_id, webhook_id)
);
COMMENT ON TABLE whk.whk_03_entregas IS
    'One row per event x webhook. webhook-id = event_id: stable across retries and replays.';

-- Fairness: the claim walks each webhook's own due deliveries (LATERAL), never one global FIFO.
CREATE INDEX whk_03_entregas_due_idx ON whk.whk_03_entregas (webhook_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX whk_03_entregas_lease_idx ON whk.whk_03_entregas (lease_until) WHERE status = 'in_flight';
CREATE INDEX whk_03_entregas_ack_idx ON whk.whk_03_entregas (ack_deadline) WHERE status = 'awaiting_ack';
CREATE INDEX whk_03_entregas_consumer_idx ON whk.whk_03_entregas (consumer_id, id DESC);
CREATE INDEX whk_03_entregas_webhook_idx ON whk.whk_03_entregas (webhook_id, id DESC);
CREATE INDEX whk_03_entregas_dead_idx ON whk.whk_03_entregas (dead_at DESC, id DESC) WHERE status = 'dead';
CREATE INDEX whk_03_entregas_outbox_idx ON whk.whk_03_entregas (outbox_id, event_created_at);

-- Every HTTP attempt of a delivery (request/response, timing, error class): the debugging record.
CREATE TABLE whk.whk_03_entregas_tentativas (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id         bigint      NOT NULL REFERENCES whk.whk_03_entregas (id) ON DELETE CASCADE,
    webhook_id          bigint      NOT NULL,
    attempt_no          integer     NOT NULL CHECK (attempt_no > 0),
    batch_id            uuid,
    dispatcher_id       text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    duration_ms         double precision,
    request_method      text        NOT NULL,
    request_url         text        NOT NULL,
    -- Secrets masked before they are written.
    request_headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_body_sha256 text,
    request_body_size   integer,
    response_status     integer,
    response_headers    jsonb,
    -- At most 20 KB of the response body are kept (response_truncated says when more came).
    response_body       text,
    response_truncated  boolean     NOT NULL DEFAULT false,
    error_class         text,
    error_detail        text,
    outcome             text        NOT NULL
);
COMMENT ON TABLE whk.whk_03_entregas_tentativas IS 'Attempt log: full request/response of every delivery attempt.';
CREATE INDEX whk_03_entregas_tentativas_delivery_idx ON whk.whk_03_entregas_tentativas (delivery_id, attempt_no);
CREATE INDEX whk_03_entregas_tentativas_webhook_idx ON whk.whk_03_entregas_tentativas (webhook_id, id DESC);

-- ===== 160_whk_05_configuracoes.sql
-- Global settings (configuracoes): retry policy, default limits, security, templates, monitoring.
-- Stored as one JSON value per key so DBAs can read and change them with plain SQL.
CREATE TABLE whk.whk_05_configuracoes (
    key         text        PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    category    text        NOT NULL CHECK (category IN ('retry', 'rate_limit', 'security', 'template',
                                                         'monitoring', 'delivery')),
    value       jsonb       NOT NULL,
    description text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL DEFAULT current_user
);
COMMENT ON TABLE whk.whk_05_configuracoes IS 'Global WHK settings as key -> JSON value; defaults seeded by migration 0003.';

-- ===== 161_whk_05_configuracoes_seed.sql
-- Defaults every install starts with (the anchors are Svix's and Standard Webhooks' published promises).
INSERT INTO whk.whk_05_configuracoes (key, category, value, description) VALUES
    ('retry.policy', 'retry',
     '{"schedule_s": [5, 300, 1800, 7200, 18000, 36000, 36000], "jitter": 0.2, "throttle_floor_s": 60, "retry_after_cap_factor": 2.0}',
     'Delays after the first attempt; after the last one the delivery becomes a dead letter.'),
    ('rate_limit.webhook_default', 'rate_limit', '{"per_second": null, "burst": null, "max_in_flight": 10}',
     'Limits applied to webhooks that set none (null = unlimited).'),
    ('rate_limit.api_per_minute', 'rate_limit', '600', 'API requests per consumer per minute.'),
    ('security.signature_tolerance_s', 'security', '300', 'Timestamp tolerance when verifying signatures.'),
    ('security.rotation_grace_hours', 'security', '24', 'Old signing keys stay valid this long after rotation.'),
    ('security.max_old_keys', 'security', '10', 'At most this many old keys sign during a grace period.'),
    ('delivery.breaker', 'delivery', '{"failure_threshold": 5, "open_seconds": 60, "half_open_probes": 1}',
     'Circuit breaker defaults per webhook.'),
    ('delivery.auto_disable_after_s', 'delivery', '432000',
     'A webhook failing without a single success for this long is disabled (5 days).'),
    ('delivery.response_body_max_bytes', 'delivery', '20000', 'Response bytes kept per attempt.'),
    ('template.envelope', 'template', '{"fields": ["type", "timestamp", "data"]}',
     'Standard Webhooks envelope of every event body.'),
    ('monitoring.oldest_pending_warn_s', 'monitoring', '300',
     'Health degrades when the oldest pending delivery is older than this.');

-- ===== 170_whk_06_alertas.sql
-- Alerts (alertas): conditions over delivery metrics, channels, escalation and throttling.
CREATE TABLE whk.whk_06_alertas (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id       bigint      REFERENCES whk.whk_04_assinantes (id),
    name              text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description       text,
    severity          text        NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    -- {"metric": "failure_rate", "operator": ">", "threshold": 0.2, "window_s": 300, "webhook_id": 1}
    condition         jsonb       NOT NULL CHECK (jsonb_typeof(condition) = 'object' AND condition ? 'metric'),
    -- [{"type": "webhook"|"slack"|"email"|"pagerduty", "target": "..."}]
    channels          jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(channels) = 'array'),
    escalation        jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(escalation) = 'array'),
    throttle_seconds  integer     NOT NULL DEFAULT 300 CHECK (throttle_seconds >= 0),
    enabled           boolean     NOT NULL DEFAULT true,
    state             text        NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'firing')),
    last_triggered_at timestamptz,
    trigger_count     bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE whk.whk_06_alertas IS 'Alert definitions with conditions, channels, escalation and throttling.';

-- Activation history of each alert.
CREATE TABLE whk.whk_06_alertas_historico (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint      NOT NULL REFERENCES whk.whk_06_alertas (id) ON DELETE CASCADE,
    triggered_at timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    value        double precision,
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    notified     jsonb       NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX whk_06_alertas_historico_alert_idx ON whk.whk_06_alertas_historico (alert_id, triggered_at DESC);

-- ===== 180_dispatchers.sql
-- Dispatcher processes: heartbeat (health, lease recovery) and the idle flag that gates wake-ups.
CREATE TABLE whk.dispatchers (
    id           text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Capture triggers NOTIFY only while some dispatcher is idle (see docs/capture.md).
    idle         boolean     NOT NULL DEFAULT false,
    stopping     boolean     NOT NULL DEFAULT false
);
COMMENT ON TABLE whk.dispatchers IS 'Live dispatcher processes; rows older than the lease are considered dead.';
CREATE INDEX dispatchers_idle_idx ON whk.dispatchers (id) WHERE idle;

COMMIT;
