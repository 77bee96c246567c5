-- Webhooks: one HTTP endpoint of a consumer, the event types it subscribes to and how to deliver them.
CREATE TABLE whk.whk_01_webhooks (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id           bigint      NOT NULL REFERENCES whk.whk_04_assinantes (id),
    name                  text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description           text,
    -- HTTP(S), or a message queue (docs/queues.md). A broker URL never carries its login: that is the
    -- encrypted basic credential below, so no password is ever stored in clear.
    url                   text        NOT NULL CHECK (url ~ '^(https?|rediss?|amqps?)://' AND length(url) <= 2048
                                                      AND url !~ '^(rediss?|amqps?)://[^/?#]*@'),
    http_method           text        NOT NULL DEFAULT 'POST' CHECK (http_method IN ('POST', 'PUT', 'PATCH')),
    -- Exact types ('order.created'), prefix wildcards ('order.*') or '*'.
    event_types           text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    -- Optional SQL/JSON path predicate over the event envelope, e.g. '$.data.new.total > 100'.
    -- The jsonpath type means PostgreSQL itself validates the expression on write.
    filter                jsonpath,
    -- Subscribe to a payload schema major version (NULL = whatever the event carries).
    payload_version       integer     CHECK (payload_version IS NULL OR payload_version BETWEEN 1 AND 1000),
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
    -- NULL = no limit. Bounded like the consumer's (see whk_04_assinantes): a denormal rate underflows the
    -- claim's token bucket. retry_policy's and breaker_config's members are bounded by CHECKs in
    -- sql/constraints/setting_bounds.sql.
    rate_limit_per_second numeric     CHECK (rate_limit_per_second IS NULL
                                             OR rate_limit_per_second BETWEEN 0.001 AND 1000000),
    rate_limit_burst      integer     CHECK (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000),
    max_in_flight         integer     NOT NULL DEFAULT 10 CHECK (max_in_flight BETWEEN 1 AND 1000),
    -- Explicit confirmation: a 202 leaves the delivery awaiting_ack until acked or the timeout retries it.
    require_ack           boolean     NOT NULL DEFAULT false,
    ack_timeout_seconds   integer     NOT NULL DEFAULT 3600 CHECK (ack_timeout_seconds BETWEEN 1 AND 2592000),
    breaker_config        jsonb       CHECK (breaker_config IS NULL OR jsonb_typeof(breaker_config) = 'object'),
    metadata              jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz,
    -- Fault isolation (docs/delivery.md, "Fault isolation"). A webhook whose data makes a shared delivery
    -- statement fail (routing, the claim, recording outcomes), or whose endpoint the SSRF guard refuses, is
    -- quarantined (whk.quarantine_webhook): the dispatcher stops claiming for it, and for a routing fault
    -- stops routing to it, so the set-based statements keep serving every other webhook. Orthogonal to
    -- status and to the breaker: clearing it (whk.clear_webhook_quarantine, or a resume) puts the webhook
    -- back where it was.
    quarantined_at        timestamptz,
    quarantine_stage      text        CHECK (quarantine_stage IN ('route', 'claim', 'record', 'ssrf')),
    quarantine_sqlstate   text        CHECK (quarantine_sqlstate ~ '^[0-9A-Z]{5}$'),
    quarantine_reason     text        CHECK (length(quarantine_reason) <= 2000),
    -- Never unsigned (docs/delivery.md, "Never unsigned"): set while the webhook has no current signing
    -- secret (no whk.webhook_secrets row with expires_at NULL), e.g. right after an INSERT in SQL, which
    -- cannot encrypt one (the key is the application's, never the database's). Derived by triggers, never
    -- written by hand. Routing still creates its deliveries (pending, nothing lost), but nothing is claimed
    -- for it until the job worker has provisioned a secret (job 'provision_secret').
    needs_secret_since    timestamptz,
    -- The parent key of whk_03_entregas' (webhook_id, consumer_id) foreign key.
    CONSTRAINT whk_01_webhooks_id_consumer_key UNIQUE (id, consumer_id),
    CONSTRAINT whk_01_webhooks_quarantine_stage_set CHECK ((quarantined_at IS NULL) = (quarantine_stage IS NULL))
);
COMMENT ON TABLE whk.whk_01_webhooks IS
    'Webhook endpoints: URL and method, subscribed types, auth, filters, status and delivery settings.';
COMMENT ON COLUMN whk.whk_01_webhooks.deleted_at IS
    'Soft delete: deliveries keep their webhook for history; routing ignores deleted webhooks.';

CREATE INDEX whk_01_webhooks_consumer_idx ON whk.whk_01_webhooks (consumer_id, id);
-- Routing reads active webhooks on every batch; this keeps that read tiny.
CREATE INDEX whk_01_webhooks_active_idx ON whk.whk_01_webhooks (id) INCLUDE (event_types)
    WHERE status = 'active' AND deleted_at IS NULL;
COMMENT ON COLUMN whk.whk_01_webhooks.quarantined_at IS
    'Set when the webhook''s data broke a delivery statement or the SSRF guard refused it; the dispatcher skips it.';
-- Health lists the quarantined webhooks on every call: a tiny partial index.
CREATE INDEX whk_01_webhooks_quarantined_idx ON whk.whk_01_webhooks (id) WHERE quarantined_at IS NOT NULL;
COMMENT ON COLUMN whk.whk_01_webhooks.needs_secret_since IS
    'Set while the webhook has no current signing secret: its deliveries wait, nothing is sent unsigned.';
-- Health, the alert metric and the provisioning sweep list the webhooks waiting for a secret: tiny index.
CREATE INDEX whk_01_webhooks_needs_secret_idx ON whk.whk_01_webhooks (id) WHERE needs_secret_since IS NOT NULL;
