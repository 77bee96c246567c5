-- 0003 baseline: the whole schema of WHK 0.1 in one file: the six seed tables (whk_01 … whk_06), the outbox, delivery runtime, capture, contracts, settings' bounds, fault isolation, the process roles and the API's tables, built from sql/schema, sql/functions, sql/triggers, sql/views and sql/constraints
-- Written by `whk db new-migration`: each block below is the text of the named file.
BEGIN;
SELECT whk.migration_begin(3, 'baseline');
-- Functions call each other in any order; their bodies are checked when first called (and by the drift test).
SET LOCAL check_function_bodies = off;

-- >>> sql/schema/100_whk_04_assinantes.sql
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
    -- Outbound delivery limits shared by all of the consumer's webhooks (NULL = unlimited). Bounded (here
    -- and in the API schema, docs/configuration.md lists them): the claim's token bucket multiplies the rate
    -- by elapsed seconds, and a denormal rate underflows that arithmetic.
    rate_limit_per_second   numeric     CHECK (rate_limit_per_second IS NULL
                                               OR rate_limit_per_second BETWEEN 0.001 AND 1000000),
    rate_limit_burst        integer     CHECK (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000),
    -- Inbound API limit per minute (NULL = the global default in whk_05_configuracoes).
    api_rate_limit_per_minute integer   CHECK (api_rate_limit_per_minute IS NULL
                                               OR api_rate_limit_per_minute BETWEEN 1 AND 1000000000),
    quota_deliveries_per_day bigint     CHECK (quota_deliveries_per_day IS NULL
                                               OR quota_deliveries_per_day BETWEEN 1 AND 1000000000),
    delivery_preferences    jsonb       NOT NULL DEFAULT '{}'::jsonb
                                        CHECK (jsonb_typeof(delivery_preferences) = 'object'),
    -- Quiet hours (docs/delivery.md, "Quiet hours"): {"time_zone": IANA name, "windows": [{"days": ["mon", …],
    -- "start": "22:00", "end": "07:00"}, …]}; NULL = none. Inside a window the deliveries of its webhooks that
    -- are not urgent wait, pending. Bounded by whk.quiet_hours_problem (sql/constraints/setting_bounds.sql).
    quiet_hours             jsonb,
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
-- <<< sql/schema/100_whk_04_assinantes.sql

-- >>> sql/schema/110_whk_01_webhooks.sql
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
    -- Delayed mode: a newer event for the same key (ordering_key_path, else the event key) supersedes the
    -- older one not yet attempted (whk.supersede_deliveries); only meaningful in delayed mode, so refused
    -- elsewhere (whk_01_webhooks_supersede_delayed).
    supersede_by_key      boolean     NOT NULL DEFAULT false,
    -- Urgent: the consumer's quiet hours (whk_04_assinantes.quiet_hours) do not hold this webhook's deliveries.
    urgent                boolean     NOT NULL DEFAULT false,
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
    CONSTRAINT whk_01_webhooks_quarantine_stage_set CHECK ((quarantined_at IS NULL) = (quarantine_stage IS NULL)),
    CONSTRAINT whk_01_webhooks_supersede_delayed CHECK (NOT supersede_by_key OR delivery_mode = 'delayed')
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
-- Routing asks after every batch whether any webhook supersedes by key (whk.supersede_deliveries): tiny index.
CREATE INDEX whk_01_webhooks_supersede_idx ON whk.whk_01_webhooks (id) WHERE supersede_by_key AND deleted_at IS NULL;
-- <<< sql/schema/110_whk_01_webhooks.sql

-- >>> sql/schema/120_webhook_secrets.sql
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
-- <<< sql/schema/120_webhook_secrets.sql

-- >>> sql/schema/130_whk_02_eventos.sql
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
    -- The version's compiled fast check: the JSON Schema translated into a jsonpath predicate, evaluated in
    -- C by whk.validate_payload before (and instead of) the PL/pgSQL reference validator. Written by the
    -- trigger whk_02_eventos_versoes_check_path; NULL = the schema needs the reference validator for every
    -- payload (see whk.jsonschema_predicate for what is translated).
    check_path    jsonpath,
    PRIMARY KEY (event_type_id, major, minor)
);
COMMENT ON TABLE whk.whk_02_eventos_versoes IS 'Schema versions per event type; minor = additive, major = breaking.';
COMMENT ON COLUMN whk.whk_02_eventos_versoes.check_path IS
    'Compiled fast check of schema (TRUE only for valid data); NULL = validated by whk.jsonschema_error only.';
-- <<< sql/schema/130_whk_02_eventos.sql

-- >>> sql/schema/131_whk_02_eventos_transforms.sql
-- Transforms between the majors of an event type (docs/capture.md, "Versions and transforms"): a webhook
-- pinned to a major (whk_01_webhooks.payload_version) receives each event rendered to that major, through
-- the shortest chain of these steps. Written by whk.register_event_transform, which validates the function.
CREATE TABLE whk.whk_02_eventos_transforms (
    event_type_id bigint      NOT NULL REFERENCES whk.whk_02_eventos (id) ON DELETE CASCADE,
    from_major    integer     NOT NULL CHECK (from_major BETWEEN 1 AND 1000),
    to_major      integer     NOT NULL CHECK (to_major BETWEEN 1 AND 1000),
    -- The function, taking data jsonb and returning jsonb, schema-qualified and quoted (format('%I.%I')). Stored as text,
    -- not regprocedure: pg_upgrade refuses user tables with reg* columns other than regclass/regtype/regrole.
    -- The CHECK keeps it a bare qualified name, so it can never smuggle SQL into the routing statement.
    function      text        NOT NULL
                              CHECK (function ~ '^("([^"]|"")+"|[a-z_][a-z0-9_$]*)\.("([^"]|"")+"|[a-z_][a-z0-9_$]*)$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type_id, from_major, to_major),
    CONSTRAINT whk_02_eventos_transforms_two_majors CHECK (from_major <> to_major)
);
COMMENT ON TABLE whk.whk_02_eventos_transforms IS
    'Per event type: a function rendering data of from_major as to_major, for webhooks pinned to a major.';
COMMENT ON COLUMN whk.whk_02_eventos_transforms.function IS
    'Schema-qualified name of a function of (data jsonb) returning jsonb; whk.register_event_transform checks it.';
-- <<< sql/schema/131_whk_02_eventos_transforms.sql

-- >>> sql/schema/140_outbox.sql
-- The outbox: one row per captured change or emitted event, written in the ERP's own transaction.
-- Range-partitioned by created_at so old data leaves by dropping partitions (see docs/capture.md);
-- the default partition guarantees an insert never fails for lack of a partition.
CREATE TABLE whk.outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    event_id         uuid        NOT NULL DEFAULT gen_random_uuid(),
    event_type       text        NOT NULL,
    event_version    integer     NOT NULL DEFAULT 1,
    event_key        text,
    source_table     text,
    -- operation and status carry no CHECK constraint (migration 0018): PostgreSQL prepares a table's CHECK
    -- expressions again in every INSERT statement (~10 us each, measured), which every captured ERP statement
    -- paid. Their only writers are WHK's own SECURITY DEFINER code (see the column comments).
    operation        text        NOT NULL,
    txid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    deliver_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Routing state: claimed by status, never by an id watermark (ids are taken before commit).
    status           text        NOT NULL DEFAULT 'pending',
    routed_at        timestamptz,
    -- Assigned when routed, in the order events become visible: the commit order seen by WHK.
    commit_seq       bigint,
    valid            boolean,
    validation_error text,
    -- The event's data, nothing constant (migration 0013): the delivered body, the Standard Webhooks envelope,
    -- is rebuilt from these by whk.event_envelope (read through whk.outbox_events for a DBA's look).
    -- Captured rows: data = the new row image (INSERT, UPDATE), old_data = the old one (UPDATE, DELETE),
    -- changed = the changed column names (UPDATE). EMIT: data = the event's data.
    data             jsonb,
    old_data         jsonb,
    changed          text[],
    -- The envelope's timestamp when it is not created_at: only events written before migration 0013 (their
    -- envelope said the statement's time). NULL for every newer event.
    occurred_at      timestamptz,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
COMMENT ON TABLE whk.outbox IS
    'Transactional outbox: rollback = no row, commit = event. Routed into whk_03_entregas by the dispatcher.';

COMMENT ON COLUMN whk.outbox.operation IS
    'INSERT, UPDATE, DELETE (capture triggers, constants) or EMIT (whk.emit). No CHECK: see migration 0018.';
COMMENT ON COLUMN whk.outbox.status IS
    'pending (as written), routed or invalid (set by the router only). No CHECK: see migration 0018.';
COMMENT ON COLUMN whk.outbox.data IS
    'Captured rows: the new row image (INSERT, UPDATE); EMIT: the event''s data. Body: whk.event_envelope.';
COMMENT ON COLUMN whk.outbox.old_data IS 'Captured rows: the old row image (UPDATE, DELETE).';
COMMENT ON COLUMN whk.outbox.changed IS 'Captured UPDATE: the names of the changed columns, sorted.';
COMMENT ON COLUMN whk.outbox.occurred_at IS
    'The envelope timestamp when it is not created_at (events written before migration 0013); else NULL.';

CREATE TABLE whk.outbox_default PARTITION OF whk.outbox DEFAULT;

CREATE SEQUENCE whk.outbox_commit_seq AS bigint;

-- The router's claim: oldest pending first.
CREATE INDEX outbox_pending_idx ON whk.outbox (id) WHERE status = 'pending';
-- Every index here is paid by every ERP commit that captures an event: keep only what a reader needs.
-- No index on event_id (nothing looks the outbox up by it; deliveries carry it) nor on event_type (the
-- admin history and counters read a created_at range, outbox_created_id_idx in 700_api_resources.sql).
-- <<< sql/schema/140_outbox.sql

-- >>> sql/schema/150_whk_03_entregas.sql
-- Deliveries (entregas): one row per (event, webhook), its state machine and retry bookkeeping.
CREATE TABLE whk.whk_03_entregas (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid        NOT NULL,
    outbox_id        bigint      NOT NULL,
    event_created_at timestamptz NOT NULL,
    event_type       text        NOT NULL,
    webhook_id       bigint      NOT NULL,
    consumer_id      bigint      NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'in_flight', 'awaiting_ack', 'delivered',
                                                   'dead', 'parked', 'cancelled', 'superseded')),
    -- Ordered mode: FIFO per (webhook_id, ordering_key) by commit_seq.
    ordering_key     text,
    commit_seq       bigint,
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Manual and bulk retries restart the retry schedule without renumbering attempts: the schedule uses
    -- attempts - schedule_offset, the attempt log keeps increasing attempt numbers.
    schedule_offset  integer     NOT NULL DEFAULT 0 CHECK (schedule_offset >= 0),
    -- Attempts (whk_03_entregas_tentativas.id) this delivery took part in, oldest first: an attempt is one
    -- HTTP request, and a batch request carries many deliveries (appended by whk.record_outcomes).
    attempt_ids      bigint[]    NOT NULL DEFAULT '{}',
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
    -- status 'superseded': the delivery of the same (webhook, key) that replaced this one before it was
    -- attempted (whk.supersede_deliveries). Not a foreign key: retention may delete either row first.
    superseded_by    bigint,
    -- Versions and transforms (docs/capture.md): for a webhook pinned to a major (payload_version), the body
    -- rendered to that major, with its "version" member, written once at routing so every attempt sends
    -- the same bytes. NULL: the event's own envelope (whk.event_envelope of the outbox row).
    payload          jsonb,
    -- Set while the delivery is parked because its body could not be rendered for the pinned major (no
    -- chain of transforms, or a transform raised): the reason. Only whk.render_parked_deliveries (run by
    -- whk.register_event_transform) releases such a delivery; resuming the webhook does not.
    render_problem   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whk_03_entregas_event_webhook_key UNIQUE (event_id, webhook_id),
    -- One key for both columns: the delivery's consumer IS its webhook's consumer, and one
    -- per-row check (SELECT ... FOR KEY SHARE) on insert instead of two. The consumer exists through the
    -- webhook (whk_01_webhooks.consumer_id references it).
    CONSTRAINT whk_03_entregas_webhook_consumer_fkey FOREIGN KEY (webhook_id, consumer_id)
        REFERENCES whk.whk_01_webhooks (id, consumer_id)
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
    -- Members of a batch request (NULL when the request carried one delivery, delivery_id: the lowest
    -- member, so joins on it keep working).
    delivery_ids        bigint[],
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
COMMENT ON COLUMN whk.whk_03_entregas.attempt_ids IS
    'Attempts (whk_03_entregas_tentativas.id) this delivery took part in, oldest first.';
COMMENT ON COLUMN whk.whk_03_entregas_tentativas.delivery_ids IS
    'Members of a batch request (NULL when the request carried one delivery, delivery_id).';
-- Per-webhook in-flight cap: counted on every claim of the webhook.
CREATE INDEX whk_03_entregas_in_flight_idx ON whk.whk_03_entregas (webhook_id) WHERE status = 'in_flight';
-- Ordered lanes: the head of each (webhook, key) lane is the lowest commit_seq not yet finished.
CREATE INDEX whk_03_entregas_lane_idx ON whk.whk_03_entregas (webhook_id, ordering_key, commit_seq, id)
    WHERE status IN ('pending', 'in_flight', 'awaiting_ack') AND ordering_key IS NOT NULL;
-- Parked deliveries (disabled webhook, 410) come back when the webhook is resumed.
CREATE INDEX whk_03_entregas_parked_idx ON whk.whk_03_entregas (webhook_id) WHERE status = 'parked';
-- Deliveries waiting for a transform, found by type when one is registered: a tiny partial index.
CREATE INDEX whk_03_entregas_render_problem_idx ON whk.whk_03_entregas (event_type)
    WHERE render_problem IS NOT NULL;
COMMENT ON COLUMN whk.whk_03_entregas.payload IS
    'The body rendered for the webhook''s pinned major (with "version"); NULL = the event''s own envelope.';
COMMENT ON COLUMN whk.whk_03_entregas.render_problem IS
    'Why this parked delivery could not be rendered for its pinned major; released by whk.render_parked_deliveries.';
-- <<< sql/schema/150_whk_03_entregas.sql

-- >>> sql/schema/155_webhook_runtime.sql
-- Per-webhook delivery state shared by every dispatcher process: circuit breaker, token bucket, failure
-- streak, fairness cursor. Kept out of whk_01_webhooks because it is rewritten on every claim and outcome,
-- and must never block an API edit of the webhook row.
CREATE TABLE whk.webhook_runtime (
    webhook_id           bigint           PRIMARY KEY REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    -- Circuit breaker (in SQL so every dispatcher moves it atomically; settings: whk/breaker.py): closed -> open after failure_threshold consecutive failures; open ->
    -- half_open when probe_at passes (one probe claimed, leased until probe_until); the probe's success
    -- closes it, its failure re-opens it for twice as long (capped by open_max_s).
    breaker_state        text             NOT NULL DEFAULT 'closed'
                                          CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer          NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    -- Failed probes since the breaker last closed: each one doubles the open period (up to open_max_s).
    failed_probes        integer          NOT NULL DEFAULT 0 CHECK (failed_probes >= 0),
    opened_at            timestamptz,
    probe_at             timestamptz,
    probe_until          timestamptz,
    -- Start of the current unbroken failure streak (NULL after any success): drives auto-disable.
    failing_since        timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    -- Token bucket (requests per second); NULL tokens = a full bucket.
    tokens               double precision,
    tokens_at            timestamptz      NOT NULL DEFAULT now(),
    -- Fairness cursor: the claim serves webhooks least recently served first.
    last_claim_at        timestamptz,
    -- Trace flag (whk.trace_webhook): until trace_until the dispatchers log this webhook's requests and
    -- responses in detail, as WHK_DEBUG does for all. It reads the flag with the webhook's row, so it needs
    -- no restart and costs no query per event; it switches itself off, and a trace is at most a day long
    -- so a forgotten one cannot keep bodies flowing into production logs.
    trace_set_at         timestamptz,
    trace_until          timestamptz,
    CONSTRAINT webhook_runtime_trace_bounds CHECK (
        trace_until IS NULL
        OR (trace_set_at IS NOT NULL AND trace_until > trace_set_at
            AND trace_until <= trace_set_at + interval '24 hours'))
);
COMMENT ON TABLE whk.webhook_runtime IS
    'Per-webhook delivery state shared by all dispatchers: breaker, token bucket, failure streak, fairness.';
-- <<< sql/schema/155_webhook_runtime.sql

-- >>> sql/schema/156_consumer_runtime.sql
-- Per-consumer outbound state shared by every dispatcher process: the token bucket and the daily quota.
CREATE TABLE whk.consumer_runtime (
    consumer_id bigint           PRIMARY KEY REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    tokens      double precision,
    tokens_at   timestamptz      NOT NULL DEFAULT now(),
    -- Daily delivery quota (whk_04_assinantes.quota_deliveries_per_day), counted in requests.
    quota_day   date             NOT NULL DEFAULT current_date,
    quota_used  bigint           NOT NULL DEFAULT 0 CHECK (quota_used >= 0)
);
COMMENT ON TABLE whk.consumer_runtime IS
    'Per-consumer outbound rate limit bucket and daily quota, shared by all dispatchers.';
-- <<< sql/schema/156_consumer_runtime.sql

-- >>> sql/schema/160_whk_05_configuracoes.sql
-- Global settings (configuracoes): retry policy, default limits, security, templates, monitoring.
-- Stored as one JSON value per key so DBAs can read and change them with plain SQL.
CREATE TABLE whk.whk_05_configuracoes (
    key         text        PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    category    text        NOT NULL CHECK (category IN ('retry', 'rate_limit', 'security', 'template',
                                                         'monitoring', 'delivery', 'dev', 'retention')),
    value       jsonb       NOT NULL,
    description text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL DEFAULT current_user
);
COMMENT ON TABLE whk.whk_05_configuracoes IS 'Global WHK settings as key -> JSON value; defaults seeded by migration 0003.';
-- <<< sql/schema/160_whk_05_configuracoes.sql

-- >>> sql/schema/161_whk_05_configuracoes_seed.sql
-- Defaults every install starts with (the anchors are Svix's and Standard Webhooks' published promises).
-- Every key here is read by the code: tests/unit/test_settings_read.py names each one's reader.
INSERT INTO whk.whk_05_configuracoes (key, category, value, description) VALUES
    ('retry.policy', 'retry',
     '{"schedule_s": [5, 300, 1800, 7200, 18000, 36000, 36000], "jitter": 0.2, "throttle_floor_s": 60, "retry_after_cap_factor": 2.0}',
     'Delays after the first attempt; after the last one the delivery becomes a dead letter.'),
    ('rate_limit.webhook_default', 'rate_limit', '{"per_second": null, "burst": null, "max_in_flight": 10}',
     'Limits applied to webhooks that set none (null = unlimited).'),
    ('rate_limit.api_per_minute', 'rate_limit', '600', 'API requests per consumer per minute.'),
    ('security.rotation_grace_hours', 'security', '24', 'Old signing keys stay valid this long after rotation.'),
    ('security.max_old_keys', 'security', '10', 'At most this many old keys sign during a grace period.'),
    ('delivery.breaker', 'delivery', '{"failure_threshold": 5, "open_s": 60, "open_max_s": 600}',
     'Circuit breaker defaults per webhook.'),
    ('delivery.auto_disable_after_s', 'delivery', '432000',
     'A webhook failing without a single success for this long is disabled (5 days).'),
    ('delivery.response_body_max_bytes', 'delivery', '20000', 'Response bytes kept per attempt.'),
    ('monitoring.oldest_pending_warn_s', 'monitoring', '300',
     'Health degrades when the oldest pending delivery is older than this.'),
    ('dev.mock_keep_per_name', 'dev', '1000', 'Requests kept per development mock endpoint (newest first).'),
    ('dev.mock_max_rows', 'dev', '50000', 'Requests kept by all development mock endpoints together.'),
    ('dev.mock_retention_hours', 'dev', '24', 'Development mock requests older than this are deleted.'),
    ('retention.outbox_days', 'retention', '365',
     'Outbox partitions whose whole day ended longer ago are dropped (unless unfinished or dead deliveries need them).'),
    ('retention.delivered_days', 'retention', '365',
     'Delivered and cancelled deliveries (and their attempts) finished longer ago are deleted.'),
    ('retention.attempts_days', 'retention', '365',
     'Attempts of delivered and cancelled deliveries older than this are deleted.'),
    ('retention.audit_days', 'retention', '365', 'Audit rows older than this are deleted (at least 30).');
-- <<< sql/schema/161_whk_05_configuracoes_seed.sql

-- >>> sql/schema/170_whk_06_alertas.sql
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
    throttle_seconds  integer     NOT NULL DEFAULT 300 CHECK (throttle_seconds BETWEEN 0 AND 86400),
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
-- <<< sql/schema/170_whk_06_alertas.sql

-- >>> sql/schema/180_dispatchers.sql
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
    stopping     boolean     NOT NULL DEFAULT false,
    -- What the dispatcher enforces and whether its rounds are failing (whk.dispatcher_heartbeat): health
    -- shows dispatchers whose SSRF policy differs from their peers', and errors no quarantine explains.
    ssrf_policy   text,
    ssrf_exempt   text[],
    last_error    text,
    last_error_at timestamptz
);
COMMENT ON TABLE whk.dispatchers IS 'Live dispatcher processes; rows older than the lease are considered dead.';
CREATE INDEX dispatchers_idle_idx ON whk.dispatchers (id) WHERE idle;
-- <<< sql/schema/180_dispatchers.sql

-- >>> sql/schema/200_capture_config.sql
-- Capture settings per ERP table, written only by whk.enable_capture / whk.disable_capture.
-- The generated trigger function bakes these values in (no lookups while the ERP commits); this table is
-- the record of what was asked for, so the functions can be regenerated (new event major, re-enable).
CREATE TABLE whk.capture_config (
    -- regclass: dumps and restores by name (and pg_upgrade keeps relation OIDs).
    tbl           regclass    PRIMARY KEY,
    event_prefix  text        NOT NULL CHECK (event_prefix ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    -- As given (NULL = the primary key) and as resolved when the triggers were generated.
    key_column    text,
    key_columns   text[]      NOT NULL DEFAULT '{}',
    -- Listened columns: an UPDATE emits only when one of them changed (NULL = any column).
    columns       text[],
    -- SQL boolean over `new` and `old`; rows for which it is not true write nothing.
    condition     text,
    operations    text[]      NOT NULL DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE']
                              CHECK (operations <@ ARRAY['INSERT', 'UPDATE', 'DELETE'] AND cardinality(operations) > 0),
    function_name text        NOT NULL,
    -- Aggregate capture (NULL = one event per row): the child tables whose rows nest into this table's
    -- events, each as 'schema.table.column' (the child's column holding this table's key). The rows of one
    -- transaction sharing a key become one event at commit; '{}' = coalescing without children.
    aggregate     text[],
    enabled_at    timestamptz NOT NULL DEFAULT now(),
    enabled_by    text        NOT NULL DEFAULT current_user,
    CONSTRAINT capture_config_event_prefix_key UNIQUE (event_prefix)
);
COMMENT ON TABLE whk.capture_config IS
    'ERP tables captured into the outbox (one row per table); managed by whk.enable_capture/disable_capture.';
-- <<< sql/schema/200_capture_config.sql

-- >>> sql/schema/201_captured_tables.sql
-- What is captured, with its settings and whether its three triggers are really in place.
CREATE VIEW whk.captured_tables AS
SELECT c.tbl,
       c.tbl::text                                         AS table_name,
       n.nspname                                           AS schema_name,
       r.relname                                           AS relation_name,
       c.event_prefix,
       ARRAY(SELECT c.event_prefix || '.' || CASE op WHEN 'INSERT' THEN 'created'
                                                      WHEN 'UPDATE' THEN 'updated'
                                                      ELSE 'deleted' END
             FROM unnest(c.operations) AS op)              AS event_types,
       c.operations,
       c.key_column,
       c.key_columns,
       c.columns,
       c.condition,
       c.function_name,
       -- false when someone dropped or disabled a capture trigger behind WHK's back. An aggregate root
       -- has all three (its deletes and inserts decide the event type even when not emitted).
       (SELECT count(*) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = c.tbl AND t.tgenabled <> 'D'
           AND t.tgname IN ('whk_capture_insert', 'whk_capture_update', 'whk_capture_delete'))
           = CASE WHEN c.aggregate IS NULL THEN cardinality(c.operations) ELSE 3 END AS active,
       c.enabled_at,
       c.enabled_by,
       c.aggregate
FROM whk.capture_config c
LEFT JOIN pg_catalog.pg_class r ON r.oid = c.tbl
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace;
COMMENT ON VIEW whk.captured_tables IS 'Captured ERP tables, their event types and settings (see docs/capture.md).';
-- <<< sql/schema/201_captured_tables.sql

-- >>> sql/schema/202_whk_02_eventos_seed.sql
-- The event types of the spec (Tipos de Eventos Suportados), version 1.0 each, with a JSON Schema
-- (draft 2020-12) of their `data`. Row events share the shape written by whk.enable_capture:
-- {"op", "table", "new", "old", "changed"}; the order status types are UPDATEs whose new status is fixed.
-- The row schemas name the fields consumers can count on (the key) and type the usual ones; other
-- columns are allowed, so an ERP's own users/orders/products tables fit without a new major.
WITH rows (entity, row_schema) AS (
    VALUES
    ('user', '{"type": "object", "required": ["id"], "properties": {
        "id": {"type": ["integer", "string"]},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "active": {"type": ["boolean", "null"]}}}'::jsonb),
    ('order', '{"type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": ["integer", "string"]},
        "user_id": {"type": ["integer", "string", "null"]},
        "status": {"type": "string"},
        "total": {"type": ["number", "string", "null"]},
        "currency": {"type": ["string", "null"]}}}'::jsonb),
    ('product', '{"type": "object", "required": ["id"], "properties": {
        "id": {"type": ["integer", "string"]},
        "sku": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "price": {"type": ["number", "string", "null"]},
        "stock": {"type": ["integer", "null"]}}}'::jsonb)
),
row_types (name, entity, op, new_status, description) AS (
    VALUES
    ('user.created', 'user', 'INSERT', NULL, 'A user account was created.'),
    ('user.updated', 'user', 'UPDATE', NULL, 'A user account was changed.'),
    ('user.deleted', 'user', 'DELETE', NULL, 'A user account was deleted.'),
    ('order.created', 'order', 'INSERT', NULL, 'An order was placed.'),
    ('order.updated', 'order', 'UPDATE', NULL,
     'An order changed (status changes to cancelled, completed or shipped have their own types).'),
    ('order.cancelled', 'order', 'UPDATE', 'cancelled', 'An order''s status became cancelled.'),
    ('order.completed', 'order', 'UPDATE', 'completed', 'An order''s status became completed.'),
    ('order.shipped', 'order', 'UPDATE', 'shipped', 'An order''s status became shipped.'),
    ('product.created', 'product', 'INSERT', NULL, 'A product was created.'),
    ('product.updated', 'product', 'UPDATE', NULL, 'A product was changed.'),
    ('product.deleted', 'product', 'DELETE', NULL, 'A product was deleted.')
),
types (name, category, description, data_schema) AS (
    SELECT t.name, t.entity, t.description,
           jsonb_build_object(
               'type', 'object',
               'required', '["op", "table", "new", "old", "changed"]'::jsonb,
               'properties', jsonb_build_object(
                   'op', jsonb_build_object('const', t.op),
                   'table', '{"type": "string"}'::jsonb,
                   'new', CASE WHEN t.op = 'DELETE' THEN '{"type": "null"}'::jsonb
                               WHEN t.new_status IS NOT NULL
                               THEN jsonb_set(r.row_schema, '{properties,status}',
                                              jsonb_build_object('const', t.new_status))
                               ELSE r.row_schema END,
                   'old', CASE WHEN t.op = 'INSERT' THEN '{"type": "null"}'::jsonb ELSE r.row_schema END,
                   'changed', CASE WHEN t.op = 'UPDATE'
                                   THEN '{"type": "array", "items": {"type": "string"}, "minItems": 1}'::jsonb
                                   ELSE '{"type": "null"}'::jsonb END))
      FROM row_types t JOIN rows r USING (entity)
    UNION ALL
    VALUES
    ('user.login', 'user', 'A user signed in (a session started).',
     '{"type": "object", "required": ["user_id", "session_id", "at"], "properties": {
        "user_id": {"type": ["integer", "string"]},
        "session_id": {"type": ["integer", "string"]},
        "at": {"type": "string", "format": "date-time"},
        "ip": {"type": ["string", "null"]},
        "user_agent": {"type": ["string", "null"]}}}'::jsonb),
    ('user.logout', 'user', 'A user signed out (a session ended).',
     '{"type": "object", "required": ["user_id", "session_id", "at"], "properties": {
        "user_id": {"type": ["integer", "string"]},
        "session_id": {"type": ["integer", "string"]},
        "at": {"type": "string", "format": "date-time"},
        "reason": {"type": ["string", "null"]},
        "duration_s": {"type": ["number", "null"], "minimum": 0}}}'::jsonb),
    ('product.out_of_stock', 'product', 'A product''s stock dropped from above zero to zero or below.',
     '{"type": "object", "required": ["product_id", "stock", "previous_stock"], "properties": {
        "product_id": {"type": ["integer", "string"]},
        "sku": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "stock": {"type": "integer", "maximum": 0},
        "previous_stock": {"type": "integer", "minimum": 1}}}'::jsonb),
    ('system.startup', 'system', 'A WHK component (dispatcher, API) started.', NULL),
    ('system.shutdown', 'system', 'A WHK component (dispatcher, API) stopped.', NULL),
    ('system.health_check', 'system', 'Periodic health snapshot (outbox backlog, live dispatchers).', NULL),
    ('system.backup_completed', 'system', 'A database backup finished (emitted by the backup job).', NULL)
),
inserted AS (
    INSERT INTO whk.whk_02_eventos (name, description, category, strict, current_major, current_minor, metadata)
    SELECT name, description, category, false, 1, 0, '{"seed": true}'::jsonb
      FROM types
    RETURNING id, name
)
INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
SELECT i.id, 1, 0,
       '{"$schema": "https://json-schema.org/draft/2020-12/schema"}'::jsonb
       || coalesce(t.data_schema,
                   '{"type": "object", "required": ["component", "database", "details"], "properties": {
                       "component": {"type": "string"},
                       "database": {"type": "string"},
                       "details": {"type": "object"}}}'::jsonb),
       'initial version (seed)'
  FROM inserted i JOIN types t USING (name);
-- <<< sql/schema/202_whk_02_eventos_seed.sql

-- >>> sql/schema/203_dispatcher_idle_until.sql
-- Cache of "some live dispatcher is idle until <epoch second>": max(heartbeat_at) + 60 s over idle rows of
-- whk.dispatchers, 0 when none. Kept by the trigger whk.dispatchers_idle_refresh (sql/triggers) on every
-- change of whk.dispatchers. Why a sequence: capture triggers read it with pg_sequence_last_value() as a
-- plain function call (~1 us) instead of running a query on every ERP statement (~15 us measured).
CREATE SEQUENCE whk.dispatcher_idle_until AS bigint MINVALUE 0 START WITH 0;
COMMENT ON SEQUENCE whk.dispatcher_idle_until IS
    'Epoch second until which some dispatcher counts as idle (capture NOTIFYs only before it); see docs/capture.md.';
-- <<< sql/schema/203_dispatcher_idle_until.sql

-- >>> sql/schema/204_outbox_partitions.sql
-- The partitions of whk.outbox with their time ranges (NULL bounds for the default partition): what
-- whk.outbox_create_partitions and whk.outbox_drop_partitions work from, and what a DBA looks at.
CREATE VIEW whk.outbox_partitions AS
SELECT p.oid::regclass                                                          AS partition,
       n.nspname || '.' || p.relname                                            AS partition_name,
       (substring(b.bound FROM 'FROM \(''([^'']+)''\)'))::timestamptz          AS range_from,
       (substring(b.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz            AS range_to,
       b.bound = 'DEFAULT'                                                      AS is_default
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS bound) AS b
WHERE i.inhparent = 'whk.outbox'::regclass;
COMMENT ON VIEW whk.outbox_partitions IS 'Partitions of whk.outbox and their created_at ranges (see docs/capture.md).';
-- <<< sql/schema/204_outbox_partitions.sql

-- >>> sql/schema/205_capture_aggregate_pending.sql
-- Aggregate capture's staging (whk.enable_capture(..., aggregate => ...)): one row per aggregate (event
-- prefix, key) a transaction touched, written by the generated statement triggers of the root table and
-- its children (whk.capture_aggregate_install) and deleted at commit by the
-- aggregate's deferred flush, which writes the one event. No row outlives its transaction.
-- UNLOGGED: a committed transaction leaves no row here, so a crash (which empties the table) loses
-- nothing and the ERP's commit writes no WAL for its staging. No CHECK constraints: PostgreSQL prepares
-- them again in every INSERT statement, which every staged ERP statement would pay; only WHK's SECURITY
-- DEFINER triggers write here.
CREATE UNLOGGED TABLE whk.capture_aggregate_pending (
    txid       xid8   NOT NULL,
    -- The aggregate: the event prefix of its root table (stable across dumps and renames, unlike an OID).
    aggregate  text   NOT NULL,
    agg_key    text   NOT NULL,
    -- NULL: only child rows were written in this transaction; 'created': the root row's first write in
    -- it was an INSERT; 'existed': an UPDATE or DELETE, and old_root is the row as it was before.
    root_state text,
    old_root   jsonb,
    -- The child collections (member names) whose rows were written in this transaction.
    members    text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (txid, aggregate, agg_key)
);
COMMENT ON TABLE whk.capture_aggregate_pending IS
    'Aggregates touched by open transactions, flushed into one outbox event each at commit (docs/capture.md).';
-- <<< sql/schema/205_capture_aggregate_pending.sql

-- >>> sql/schema/600_api_role.sql
-- The application role of the API. NOLOGIN: deployments create a login role that is a member of it (or
-- set WHK_API_DB_ROLE=whk_app so the API does SET ROLE on every pooled connection). It may read and write
-- every WHK table except the audit trail, which it may only read and append to (grants in 620_audit_log).
-- Roles are cluster-wide: created only when absent so every database of a cluster can share it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'whk_app') THEN
        CREATE ROLE whk_app NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA whk TO whk_app;
-- Every WHK table and sequence that exists now, except pgqueuer's own objects: the API reaches the job
-- queue only through SECURITY DEFINER functions, and pgqueuer's DDL stays exactly what it installs.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p', 'u', 'S') AND c.relname NOT LIKE 'pgqueuer%'
        ORDER BY c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE whk.%I TO whk_app', r.relname);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.%I TO whk_app', r.relname);
        END IF;
    END LOOP;
END;
$$;
-- Tables and sequences created later by the migrating role get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO whk_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO whk_app;
-- <<< sql/schema/600_api_role.sql

-- >>> sql/schema/610_api_keys.sql
-- API keys: shown once at creation, stored as SHA-256 of the whole key (the key carries 256 random bits,
-- so a fast hash is enough; no plaintext ever reaches the database). ``prefix`` is the non-secret part
-- used to find the row (whk_<prefix>_<secret>); the hash is then compared in constant time by the API.
CREATE TABLE whk.api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL CHECK (prefix ~ '^[a-z0-9]{12}$'),
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    -- NULL consumer = admin key (is_admin must then be true): admins see every tenant.
    consumer_id  bigint      REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    is_admin     boolean     NOT NULL DEFAULT false,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes       text[]      NOT NULL DEFAULT '{*}' CHECK (cardinality(scopes) > 0),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    revoked_by   text,
    -- Refreshed at most once a minute per key (not on every request).
    last_used_at timestamptz,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    CONSTRAINT api_keys_owner_check CHECK ((consumer_id IS NULL) = is_admin)
);
COMMENT ON TABLE whk.api_keys IS
    'API keys (hashed). Revocation is read on every request: effective for the next request after commit.';
CREATE INDEX api_keys_consumer_idx ON whk.api_keys (consumer_id, id);
-- <<< sql/schema/610_api_keys.sql

-- >>> sql/schema/620_audit_log.sql
-- Audit trail: one row per API mutation, written in the mutation's own transaction (both commit or
-- neither), plus security events (denied source address). Secrets are removed before the row is built.
CREATE TABLE whk.audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    -- The tenant the row belongs to (NULL = platform-wide); consumers read only their own rows.
    consumer_id bigint,
    action      text        NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    target_type text        NOT NULL,
    target_id   text,
    before      jsonb,
    after       jsonb,
    request_id  text,
    source_ip   inet
);
COMMENT ON TABLE whk.audit_log IS
    'Append-only audit trail (the whk_app role has SELECT and INSERT only). Secrets are never stored here.';
CREATE INDEX audit_log_consumer_idx ON whk.audit_log (consumer_id, id DESC);
CREATE INDEX audit_log_target_idx ON whk.audit_log (target_type, target_id, id DESC);
CREATE INDEX audit_log_occurred_idx ON whk.audit_log (occurred_at DESC, id DESC);
-- Append-only for the application: no UPDATE, DELETE or TRUNCATE, whatever the schema-wide grants say.
REVOKE UPDATE, DELETE, TRUNCATE ON whk.audit_log FROM whk_app;
-- <<< sql/schema/620_audit_log.sql

-- >>> sql/schema/630_api_rate_limits.sql
-- API rate-limit state shared by every API process: one GCRA "theoretical arrival time" per subject
-- (consumer:<id>, or the admin credential). UNLOGGED: after a crash the limits simply start afresh.
CREATE UNLOGGED TABLE whk.api_rate_limits (
    subject text        PRIMARY KEY,
    tat     timestamptz NOT NULL
);
COMMENT ON TABLE whk.api_rate_limits IS 'GCRA state of the per-consumer API rate limit (see api_rate_limit_hit).';
-- <<< sql/schema/630_api_rate_limits.sql

-- >>> sql/schema/700_api_resources.sql
-- Indexes behind the management API's list, filter and statistics endpoints (migration 0007).
-- Every list is keyset-paginated by (sort column, id) under the caller's tenant, so each common filter
-- has an index that starts with the tenant or webhook and ends with id: a page costs the same with
-- ten thousand or a million deliveries (bench/api.py measures it).

-- GET /deliveries?consumer=…&status=… (the tenant's own view) and ?webhook_id=…&status=….
CREATE INDEX whk_03_entregas_consumer_status_idx ON whk.whk_03_entregas (consumer_id, status, id DESC);
CREATE INDEX whk_03_entregas_webhook_status_idx ON whk.whk_03_entregas (webhook_id, status, id DESC);
-- GET /deliveries?event_type=… (admin and tenant).
CREATE INDEX whk_03_entregas_type_idx ON whk.whk_03_entregas (event_type, id DESC);
CREATE INDEX whk_03_entregas_consumer_type_idx ON whk.whk_03_entregas (consumer_id, event_type, id DESC);
-- Time windows: delivery statistics, bulk retry by time range, created_from/created_to filters.
CREATE INDEX whk_03_entregas_created_idx ON whk.whk_03_entregas (created_at, id);
-- GET /deliveries/failed for one tenant, most recent dead letters first.
CREATE INDEX whk_03_entregas_consumer_dead_idx ON whk.whk_03_entregas (consumer_id, dead_at DESC, id DESC)
    WHERE status = 'dead';
-- Attempt latency percentiles over a time window.
CREATE INDEX whk_03_entregas_tentativas_started_idx ON whk.whk_03_entregas_tentativas (started_at);
-- GET /events/history of one tenant: its deliveries in event order, grouped per event as they stream.
CREATE INDEX whk_03_entregas_consumer_event_idx
    ON whk.whk_03_entregas (consumer_id, event_created_at DESC, outbox_id DESC);
-- GET /events/history (admin), newest first (per partition).
CREATE INDEX outbox_created_id_idx ON whk.outbox (created_at DESC, id DESC);
-- GET /monitoring/alerts of one tenant.
CREATE INDEX whk_06_alertas_consumer_idx ON whk.whk_06_alertas (consumer_id, id);
-- <<< sql/schema/700_api_resources.sql

-- >>> sql/schema/710_operations.sql
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
-- <<< sql/schema/710_operations.sql

-- >>> sql/schema/715_replays.sql
-- Replays (backfills): past events, still in outbox retention, sent again to one webhook (a new subscriber
-- catching up, a receiver that lost data). One row per request, worked through in batches by the job
-- worker (pgqueuer entrypoint `replay`, whk.replay_step), so the API and `whk replay` show done/total and
-- can cancel. Each (event, webhook) pair keeps one delivery, hence one webhook-id, forever: an existing
-- delivery of the pair is re-queued, never duplicated.
CREATE TABLE whk.replays (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id        bigint      NOT NULL REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    -- The tenant: the webhook's consumer, copied so tenant-scoped reads need no join.
    consumer_id       bigint      NOT NULL,
    since             timestamptz NOT NULL,
    until             timestamptz NOT NULL,
    -- Event type names or patterns (order.*, *) narrowing the webhook's own subscription; empty = all of it.
    event_types       text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(event_types) <= 50),
    -- An SQL/JSON path predicate on the delivered body (the Standard Webhooks envelope), like a webhook's
    -- filter: `$.data.total > 100`.
    predicate         jsonpath,
    total             bigint      NOT NULL DEFAULT 0 CHECK (total >= 0),
    done              bigint      NOT NULL DEFAULT 0 CHECK (done >= 0),
    -- Of done: deliveries created for the first time, and existing ones re-queued (same webhook-id).
    created           bigint      NOT NULL DEFAULT 0 CHECK (created >= 0),
    requeued          bigint      NOT NULL DEFAULT 0 CHECK (requeued >= 0),
    -- Keyset position of the last event handled (outbox created_at, id).
    cursor_created_at timestamptz,
    cursor_id         bigint,
    state             text        NOT NULL DEFAULT 'queued'
                                  CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    error             text,
    created_by        text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CONSTRAINT replays_range_check CHECK (since < until)
);
COMMENT ON TABLE whk.replays IS
    'Replays of past outbox events to one webhook: filters, progress (done/total) and state; see docs/delivery.md.';
CREATE INDEX replays_webhook_idx ON whk.replays (webhook_id, id DESC);
-- <<< sql/schema/715_replays.sql

-- >>> sql/schema/716_bulk_retries.sql
-- Bulk retries: deliveries matching the filters of POST /deliveries/bulk-retry put back in the queue, by
-- the job worker (pgqueuer entrypoint `bulk_retry`, whk.bulk_retry_step) in batches by keyset on the
-- delivery id, so a retry over a million dead letters neither holds one long transaction nor times out the
-- request, and the API shows done/total and can cancel. Its own table rather than a shared one with
-- whk.replays: the two have different filters and counters, and a generic row would trade two plain
-- tables for a jsonb of parameters that no CHECK could bound.
CREATE TABLE whk.bulk_retries (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The tenant the deliveries are limited to; NULL for an admin's retry across every consumer.
    consumer_id   bigint,
    webhook_id    bigint      REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    event_type    text        CHECK (length(event_type) BETWEEN 1 AND 200),
    statuses      text[]      NOT NULL DEFAULT '{dead}'
                              CHECK (cardinality(statuses) BETWEEN 1 AND 6
                                     AND statuses <@ ARRAY['pending', 'awaiting_ack', 'delivered', 'dead',
                                                           'parked', 'cancelled']),
    -- On the delivery's created_at, [created_from, created_to).
    created_from  timestamptz,
    created_to    timestamptz,
    total         bigint      NOT NULL DEFAULT 0 CHECK (total >= 0),
    -- Of done (deliveries looked at): re-queued, and skipped by whk.retry_deliveries (their event left the
    -- outbox, their webhook was deleted meanwhile, or their status no longer allows a retry).
    done          bigint      NOT NULL DEFAULT 0 CHECK (done >= 0),
    requeued      bigint      NOT NULL DEFAULT 0 CHECK (requeued >= 0),
    skipped       bigint      NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    -- Keyset position: the last delivery id handled.
    cursor_id     bigint,
    state         text        NOT NULL DEFAULT 'queued'
                              CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    error         text,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CONSTRAINT bulk_retries_range_check CHECK (created_from < created_to),
    CONSTRAINT bulk_retries_counts_check CHECK (requeued + skipped = done)
);
COMMENT ON TABLE whk.bulk_retries IS
    'Bulk retries of deliveries by filters: progress (done/total, requeued/skipped) and state; see docs/operations.md.';
CREATE INDEX bulk_retries_consumer_idx ON whk.bulk_retries (consumer_id, id DESC);
-- <<< sql/schema/716_bulk_retries.sql

-- >>> sql/schema/800_mock_requests.sql
-- Requests received by the development mock endpoints (/api/whk/dev/mock/{name}, any method): a place to point
-- a webhook at while building an integration, and to see exactly what WHK sent (headers, body, signature).
CREATE TABLE whk.mock_requests (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mock_name      text        NOT NULL CHECK (mock_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    received_at    timestamptz NOT NULL DEFAULT now(),
    method         text        NOT NULL,
    headers        jsonb       NOT NULL CHECK (jsonb_typeof(headers) = 'object'),
    -- At most 256 KB of the body are kept (body_size is the full size).
    body           text        NOT NULL,
    body_size      integer     NOT NULL CHECK (body_size >= 0),
    replied_status integer     NOT NULL CHECK (replied_status BETWEEN 100 AND 599),
    -- The signature verdict against the secrets of the webhook(s) whose URL targets this mock: true = one
    -- verified (webhook_id says which), false = none did (signature_reason says why), NULL = no webhook
    -- targets the mock, so there was nothing to verify with. No foreign key: a deleted webhook must not
    -- take the record of what it sent with it.
    webhook_id       bigint,
    signature_ok     boolean,
    signature_reason text CHECK (length(signature_reason) <= 1000)
);
COMMENT ON TABLE whk.mock_requests IS
    'Development mock endpoints: recent requests per mock name, bounded by the dev.mock_* settings (whk.mock_record trims).';
CREATE INDEX mock_requests_name_idx ON whk.mock_requests (mock_name, id DESC);
-- The retention trim deletes by age.
CREATE INDEX mock_requests_received_at_idx ON whk.mock_requests (received_at);
-- <<< sql/schema/800_mock_requests.sql

-- >>> sql/schema/810_mock_scenarios.sql
-- What a development mock endpoint answers, request by request (whk/mockscenario.py is the format and the
-- decision; the pytest plugin's receiver plays the same). Stored here, not in an API worker's memory, so
-- every worker agrees on the script and on how far it has got (served, advanced under the row lock).
-- The steps are parallel arrays (status, wait before answering, time over which the body is dripped) so
-- their bounds are plain CHECKs, the same as the API schema's.
CREATE TABLE whk.mock_scenarios (
    mock_name     text             PRIMARY KEY CHECK (mock_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    step_status   integer[]        NOT NULL DEFAULT '{}',
    step_delay_ms integer[]        NOT NULL DEFAULT '{}',
    step_drip_ms  integer[]        NOT NULL DEFAULT '{}',
    then_status   integer          NOT NULL DEFAULT 200 CHECK (then_status BETWEEN 200 AND 599),
    then_delay_ms integer          NOT NULL DEFAULT 0 CHECK (then_delay_ms BETWEEN 0 AND 30000),
    then_drip_ms  integer          NOT NULL DEFAULT 0 CHECK (then_drip_ms BETWEEN 0 AND 30000),
    -- Only compared with a hash-derived number in [0, 1), never used in arithmetic: no floor needed.
    fail_rate     double precision NOT NULL DEFAULT 0 CHECK (fail_rate >= 0 AND fail_rate <= 1),
    fail_status   integer          NOT NULL DEFAULT 503 CHECK (fail_status BETWEEN 200 AND 599),
    seed          integer          NOT NULL DEFAULT 0 CHECK (seed >= 0),
    -- Requests answered since the scenario was set: the next one is request number `served`.
    served        bigint           NOT NULL DEFAULT 0 CHECK (served >= 0),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT mock_scenarios_steps_bounds CHECK (
        cardinality(step_status) <= 100
        AND cardinality(step_delay_ms) = cardinality(step_status)
        AND cardinality(step_drip_ms) = cardinality(step_status)
        AND coalesce(array_ndims(step_status), 1) = 1
        AND array_position(step_status, NULL) IS NULL
        AND array_position(step_delay_ms, NULL) IS NULL
        AND array_position(step_drip_ms, NULL) IS NULL
        AND 200 <= ALL (step_status) AND 599 >= ALL (step_status)
        AND 0 <= ALL (step_delay_ms) AND 30000 >= ALL (step_delay_ms)
        AND 0 <= ALL (step_drip_ms) AND 30000 >= ALL (step_drip_ms))
);
COMMENT ON TABLE whk.mock_scenarios IS
    'Development mock endpoints: the scripted answers per mock name (steps, then, seeded random failures).';
-- <<< sql/schema/810_mock_scenarios.sql

-- >>> sql/schema/900_process_roles.sql
-- One least-privilege role per WHK process, so no process can rewrite the audit trail or change the schema:
--   whk_app        the API (600_api_role): every WHK table, the audit trail only SELECT and INSERT;
--   whk_dispatcher the dispatcher: every WHK table except the API's own (API keys, API rate limits,
--                  dev-mock captures), which it never reads; the audit trail only INSERT (a webhook the
--                  dispatcher disables, e.g. on 410 Gone, is audited like one an admin disables);
--   whk_readonly   dashboards, reports and psql sessions that only look: SELECT on every WHK table.
-- NOLOGIN: `whk up` gives them LOGIN on its private server; elsewhere a DBA does, or grants them to login
-- roles (docs/dba.md). The functions a role needs beyond PUBLIC's carry their GRANT in their own file.
-- Roles are cluster-wide: created only when absent so every database of a cluster can share them.
-- This file comes after every table: tables created later (later files, later migrations) get the same
-- grants from the default privileges at the end.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'whk_dispatcher') THEN
        CREATE ROLE whk_dispatcher NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'whk_readonly') THEN
        CREATE ROLE whk_readonly NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA whk TO whk_dispatcher, whk_readonly;
-- Every WHK table, view and sequence that exists now, except pgqueuer's own objects (its DDL stays exactly
-- what it installs) and, for the dispatcher, the API's tables.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p', 'u', 'v', 'm', 'S') AND c.relname NOT LIKE 'pgqueuer%'
        ORDER BY c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE whk.%I TO whk_dispatcher', r.relname);
            EXECUTE format('GRANT SELECT ON SEQUENCE whk.%I TO whk_readonly', r.relname);
        ELSE
            IF r.relname = 'audit_log' THEN
                EXECUTE 'GRANT INSERT ON TABLE whk.audit_log TO whk_dispatcher';
            ELSIF r.relname NOT IN ('api_keys', 'api_rate_limits', 'mock_requests') THEN
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.%I TO whk_dispatcher', r.relname);
            END IF;
            EXECUTE format('GRANT SELECT ON TABLE whk.%I TO whk_readonly', r.relname);
        END IF;
    END LOOP;
END;
$$;
-- The job worker (`whk worker`, which `whk dispatcher` starts by default) runs with the dispatcher's role:
-- it takes and finishes pgqueuer jobs. The API enqueues only through SECURITY DEFINER functions
-- (whk.enqueue_notice); it and the read-only role may only look at the jobs and schedules (health, the
-- dashboard, `whk jobs`).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'S') AND c.relname LIKE 'pgqueuer%'
        ORDER BY c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE whk.%I TO whk_dispatcher', r.relname);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE whk.%I TO whk_dispatcher', r.relname);
            EXECUTE format('GRANT SELECT ON TABLE whk.%I TO whk_app, whk_readonly', r.relname);
        END IF;
    END LOOP;
END;
$$;
-- Tables and sequences created later by the migrating role get the same grants (never TRUNCATE: a table
-- that must stay append-only, like the audit trail, only has to revoke UPDATE and DELETE).
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO whk_dispatcher;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO whk_dispatcher;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT ON TABLES TO whk_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA whk GRANT SELECT ON SEQUENCES TO whk_readonly;
-- <<< sql/schema/900_process_roles.sql

-- >>> sql/schema/910_supervised_processes.sql
-- The child processes a `whk up` supervises (API, dispatcher, ...), written by that `whk up` and read by
-- /api/whk/monitoring/health: a child that keeps crashing is reported there while PostgreSQL and the
-- other children stay up. The supervisor refreshes updated_at while it runs and deletes its rows when it
-- stops; rows it left behind (killed with -9) are ignored once stale.
CREATE TABLE whk.supervised_processes (
    supervisor  text        NOT NULL CHECK (length(supervisor) BETWEEN 1 AND 200),
    name        text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    pid         integer,
    -- running: up; restarting: waiting out its backoff after a crash; failing: crashed max_crashes times
    -- within the window, retried at the longest backoff.
    state       text        NOT NULL CHECK (state IN ('running', 'restarting', 'failing')),
    restarts    integer     NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    crashes_in_window integer NOT NULL DEFAULT 0 CHECK (crashes_in_window >= 0),
    last_exit   text        CHECK (length(last_exit) <= 200),
    last_exit_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supervisor, name)
);
COMMENT ON TABLE whk.supervised_processes IS
    'Children of each running `whk up` (state, restarts, last exit cause); read by the health endpoint.';
-- <<< sql/schema/910_supervised_processes.sql

-- >>> sql/functions/api/api_rate_limit_hit.sql
-- whk.api_rate_limit_hit: count one API request of p_subject against a GCRA limit of p_limit requests per
-- p_window_s seconds (bursts up to p_limit). One row lock per subject serialises that subject's requests
-- across every API process; other subjects never wait. p_limit NULL = the global default
-- (whk_05_configuracoes 'rate_limit.api_per_minute', scaled to the window). p_now is injectable for tests.
CREATE OR REPLACE FUNCTION whk.api_rate_limit_hit(
    p_subject text,
    p_limit integer,
    p_window_s double precision DEFAULT 60,
    p_now timestamptz DEFAULT clock_timestamp()
)
RETURNS TABLE (allowed boolean, limit_count integer, remaining integer, retry_after_s double precision,
               reset_s double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_limit    integer := p_limit;
    v_interval double precision;          -- seconds between requests at the sustained rate
    v_tolerance double precision;         -- how far ahead of now the TAT may run (the burst)
    v_tat      timestamptz;
    v_ahead    double precision;
BEGIN
    IF v_limit IS NULL THEN
        SELECT least(ceil((c.value #>> '{}')::numeric * p_window_s / 60), 2147483647)::integer INTO v_limit
        FROM whk.whk_05_configuracoes c WHERE c.key = 'rate_limit.api_per_minute';
        v_limit := coalesce(v_limit, 600);
    END IF;
    -- At least one request per window: the interval below divides by the limit.
    v_limit := greatest(v_limit, 1);
    v_interval := p_window_s / v_limit;
    v_tolerance := p_window_s - v_interval;

    INSERT INTO whk.api_rate_limits AS r (subject, tat) VALUES (p_subject, p_now)
    ON CONFLICT (subject) DO NOTHING;
    SELECT r.tat INTO v_tat FROM whk.api_rate_limits r WHERE r.subject = p_subject FOR UPDATE;
    v_tat := greatest(v_tat, p_now);
    v_ahead := extract(epoch FROM v_tat - p_now);

    IF v_ahead > v_tolerance + 1e-6 THEN
        allowed := false;
        limit_count := v_limit;
        remaining := 0;
        retry_after_s := v_ahead - v_tolerance;
        reset_s := v_ahead;
        RETURN NEXT;
        RETURN;
    END IF;

    v_tat := v_tat + make_interval(secs => v_interval);
    UPDATE whk.api_rate_limits r SET tat = v_tat WHERE r.subject = p_subject;
    v_ahead := v_ahead + v_interval;
    allowed := true;
    limit_count := v_limit;
    remaining := greatest(0, floor((p_window_s - v_ahead) / v_interval + 1e-6)::integer);
    retry_after_s := 0;
    reset_s := v_ahead;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION whk.api_rate_limit_hit(text, integer, double precision, timestamptz) IS
    'GCRA rate limit shared across API processes: allowed?, limit, remaining, retry-after and reset seconds.';
-- <<< sql/functions/api/api_rate_limit_hit.sql

-- >>> sql/functions/api/mock_record.sql
-- whk.mock_record: store one request received by a development mock endpoint, then keep the table bounded
-- whatever points at it (a forgotten mock with a busy webhook, or many mock names): the newest
-- dev.mock_keep_per_name requests of this mock, nothing older than dev.mock_retention_hours, and the newest
-- dev.mock_max_rows overall (settings in whk_05_configuracoes, bounded by whk.config_value_problem).
CREATE OR REPLACE FUNCTION whk.mock_record(
    p_name text, p_method text, p_headers jsonb, p_body text, p_body_size integer, p_status integer,
    p_webhook_id bigint DEFAULT NULL, p_signature_ok boolean DEFAULT NULL, p_signature_reason text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_id bigint;
    v_keep integer;
    v_max_rows integer;
    v_hours double precision;
BEGIN
    SELECT coalesce(max((c.value #>> '{}')::integer) FILTER (WHERE c.key = 'dev.mock_keep_per_name'), 1000),
           coalesce(max((c.value #>> '{}')::integer) FILTER (WHERE c.key = 'dev.mock_max_rows'), 50000),
           coalesce(max((c.value #>> '{}')::double precision)
                    FILTER (WHERE c.key = 'dev.mock_retention_hours'), 24)
      INTO v_keep, v_max_rows, v_hours
      FROM whk.whk_05_configuracoes c
     WHERE c.key IN ('dev.mock_keep_per_name', 'dev.mock_max_rows', 'dev.mock_retention_hours');

    INSERT INTO whk.mock_requests (mock_name, method, headers, body, body_size, replied_status,
                                   webhook_id, signature_ok, signature_reason)
    VALUES (p_name, p_method, p_headers, p_body, p_body_size, p_status,
            p_webhook_id, p_signature_ok, left(p_signature_reason, 1000))
    RETURNING id INTO v_id;

    DELETE FROM whk.mock_requests m
    WHERE m.mock_name = p_name
      AND m.id < (SELECT k.id FROM whk.mock_requests k
                  WHERE k.mock_name = p_name ORDER BY k.id DESC OFFSET v_keep - 1 LIMIT 1);
    DELETE FROM whk.mock_requests m
    WHERE m.received_at < now() - make_interval(secs => v_hours * 3600);
    DELETE FROM whk.mock_requests m
    WHERE m.id < (SELECT k.id FROM whk.mock_requests k ORDER BY k.id DESC OFFSET v_max_rows - 1 LIMIT 1);
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.mock_record(text, text, jsonb, text, integer, integer, bigint, boolean, text) IS
    'Record a request to a development mock endpoint with its signature verdict; trims by the dev.mock_* settings.';
-- <<< sql/functions/api/mock_record.sql

-- >>> sql/functions/capture/capture_aggregate_check.sql
-- whk.capture_aggregate_check: validate the `aggregate` argument of whk.enable_capture for root table tbl
-- (its resolved key columns, its condition) and return it normalised: each child as
-- 'schema.table.column' with quoted identifiers where needed, sorted, without duplicates. Every refusal
-- raises with a HINT: the aggregate's flush reads these tables by these columns at every commit, so a
-- mistake must surface here, never in the ERP's transaction.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_check(tbl regclass, event_prefix text, key_columns text[],
                                                       condition text, aggregate text[])
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_elem   text;
    v_parts  text[];
    v_child  regclass;
    v_kind   "char";
    v_nsp    text;
    v_rel    text;
    v_owner  text;
    v_other  regclass;
    v_out    text[] := '{}';
    v_tables regclass[] := '{}';
    v_ctype  oid;
    v_rtype  oid;
BEGIN
    IF condition IS NOT NULL THEN
        RAISE EXCEPTION 'a capture condition cannot be combined with aggregate capture of %', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an aggregate emits one event per key and transaction; filter with columns => ... or in the webhook''s filter';
    END IF;
    IF cardinality(key_columns) <> 1 THEN
        RAISE EXCEPTION 'aggregate capture of % needs a one-column key, found %', tbl,
            CASE WHEN cardinality(key_columns) = 0 THEN 'no primary key' ELSE array_to_string(key_columns, ', ') END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass key_column => a column that identifies one row (the primary key or a unique column)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = tbl AND i.indisunique AND i.indpred IS NULL AND i.indnkeyatts = 1
                      AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a
                                          WHERE a.attrelid = tbl AND a.attname = key_columns[1])) THEN
        RAISE EXCEPTION 'the aggregate key %.% does not identify one row', tbl, quote_ident(key_columns[1])
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use the primary key, or a column with a unique index of its own';
    END IF;
    IF cardinality(aggregate) > 9 THEN
        -- Each child gets generated functions <function_name>_<n>i|u|d within PostgreSQL's 63-character names.
        RAISE EXCEPTION 'aggregate % lists % child tables, at most 9 are supported', event_prefix, cardinality(aggregate)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'nest only the child tables receivers need in this event';
    END IF;
    BEGIN
        -- The flush finds the root by its key with pg_catalog's operators only.
        EXECUTE format('SELECT FROM %s AS r WHERE r.%I OPERATOR(pg_catalog.=) r.%I LIMIT 0',
                       tbl, key_columns[1], key_columns[1]);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'the aggregate key %.% cannot be compared: %', tbl, quote_ident(key_columns[1]), SQLERRM
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'aggregate keys must be of a type whose = operator is built in (integers, text, uuid, ...)';
    END;
    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';

    FOREACH v_elem IN ARRAY aggregate LOOP
        BEGIN
            v_parts := parse_ident(coalesce(v_elem, ''));
        EXCEPTION WHEN invalid_parameter_value THEN
            v_parts := NULL;
        END;
        IF cardinality(v_parts) IS DISTINCT FROM 3 THEN
            RAISE EXCEPTION 'invalid aggregate child %', coalesce(quote_literal(v_elem), 'NULL')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'name each child as ''schema.table.column'', the column holding the root''s key, e.g. ''erp.order_lines.order_id''';
        END IF;
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        IF v_child IS NULL THEN
            RAISE EXCEPTION 'aggregate child table %.% does not exist', quote_ident(v_parts[1]), quote_ident(v_parts[2])
                USING ERRCODE = 'undefined_table', HINT = 'name each child as ''schema.table.column'' of an existing table';
        END IF;
        SELECT r.relkind, n.nspname, r.relname INTO v_kind, v_nsp, v_rel
          FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = v_child;
        IF v_kind NOT IN ('r', 'p') OR v_child = tbl OR v_nsp IN ('whk', 'pg_catalog', 'information_schema')
           OR v_nsp LIKE 'pg\_%' THEN
            RAISE EXCEPTION '% cannot be a child of aggregate %', v_child, event_prefix
                USING ERRCODE = 'wrong_object_type',
                      HINT = 'a child is an ERP table other than the root (not a view, not a table of schema whk)';
        END IF;
        IF v_child = ANY (v_tables) THEN
            RAISE EXCEPTION 'table % is listed twice in aggregate %', v_child, event_prefix
                USING ERRCODE = 'duplicate_object', HINT = 'a child table joins the aggregate by one column';
        END IF;
        v_tables := v_tables || v_child;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_child AND a.attname = v_parts[3]
                        AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in %', quote_ident(v_parts[3]), v_child
                USING ERRCODE = 'undefined_column',
                      HINT = format('name the column of %s that holds the key of %s (%s)', v_child, tbl, key_columns[1]);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = v_rel
                    AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'child % would nest under "%", a column of %', v_child, v_rel, tbl
                USING ERRCODE = 'duplicate_column',
                      HINT = 'children nest in the event under their table''s name; it must not be a column of the root';
        END IF;
        SELECT cc.tbl INTO v_other
          FROM whk.capture_config cc, unnest(cc.aggregate) AS a
         WHERE cc.tbl <> tbl
           AND to_regclass(format('%I.%I', (parse_ident(a))[1], (parse_ident(a))[2])) = v_child;
        IF FOUND THEN
            RAISE EXCEPTION 'table % is already a child of the aggregate of %', v_child, v_other
                USING ERRCODE = 'unique_violation', HINT = 'a table belongs to one aggregate';
        END IF;
        -- Keys are staged as text and cast back to the root key's type at commit: the child's values must
        -- be values of that type (the same type, or integers for an integer key, strings for a string key),
        -- or a value such as 1.5 would fail the ERP's commit.
        SELECT ck.t, rk.t INTO v_ctype, v_rtype
          FROM (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) AS t FROM pg_attribute a
                  JOIN pg_type ty ON ty.oid = a.atttypid
                 WHERE a.attrelid = v_child AND a.attname = v_parts[3]) AS ck,
               (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) AS t FROM pg_attribute a
                  JOIN pg_type ty ON ty.oid = a.atttypid
                 WHERE a.attrelid = tbl AND a.attname = key_columns[1]) AS rk;
        IF v_ctype <> v_rtype
           AND NOT (v_ctype IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                    AND v_rtype IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype))
           AND NOT (v_ctype IN ('text'::regtype, 'varchar'::regtype) AND v_rtype IN ('text'::regtype, 'varchar'::regtype)) THEN
            RAISE EXCEPTION 'column %.% (%) cannot hold the key of % (%)', v_child, quote_ident(v_parts[3]),
                format_type(v_ctype, NULL), tbl, format_type(v_rtype, NULL)
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('the child''s column must hold values of %s.%s (the same type, or integer for an integer key)',
                                    tbl, key_columns[1]);
        END IF;
        BEGIN
            -- The flush joins them with pg_catalog's operators only (it runs with search_path = pg_catalog).
            EXECUTE format('SELECT FROM %s AS c JOIN %s AS r ON c.%I OPERATOR(pg_catalog.=) r.%I LIMIT 0',
                           v_child, tbl, v_parts[3], key_columns[1]);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'column %.% cannot be compared with the key of %: %', v_child, quote_ident(v_parts[3]),
                tbl, SQLERRM
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'aggregate keys must be of a type whose = operator is built in (integers, text, uuid, ...)';
        END;
        v_out := v_out || format('%I.%I.%I', v_nsp, v_rel, v_parts[3]);
    END LOOP;

    -- The flush (SECURITY DEFINER, owned by the owner of schema whk) reads the root and the children.
    SELECT string_agg(t::text, ', ') INTO v_elem
      FROM unnest(tbl || v_tables) AS t WHERE NOT has_table_privilege(v_owner, t, 'SELECT');
    IF v_elem IS NOT NULL THEN
        RAISE EXCEPTION 'role % (owner of schema whk) cannot read %', v_owner, v_elem
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT SELECT ON %s TO %I', v_elem, v_owner);
    END IF;
    RETURN ARRAY(SELECT a FROM unnest(v_out) AS a ORDER BY 1);
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_check(regclass, text, text[], text, text[]) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_check(regclass, text, text[], text, text[]) IS
    'Validate and normalise the aggregate argument of whk.enable_capture (children as schema.table.column).';
-- <<< sql/functions/capture/capture_aggregate_check.sql

-- >>> sql/functions/capture/capture_aggregate_install.sql
-- whk.capture_aggregate_install: (re)generate the capture of a table captured as an aggregate root
-- (whk.capture_config.aggregate not NULL), called by whk.capture_install. Rows of one transaction that
-- share an aggregate key become one event at commit:
--   * statement triggers whk_capture_insert|update|delete on the root and whk_aggregate_insert|update|delete
--     on each child run generated staging functions (<function_name>_ins|_upd|_del, <function_name>_<n>i|u|d)
--     that record the touched keys in whk.capture_aggregate_pending: one row per key and transaction,
--     whatever the number of statements;
--   * the constraint trigger <function_name>_agg on that table, DEFERRABLE INITIALLY DEFERRED, fires once
--     per staged row at commit and runs the generated whk.<function_name>_agg(), which reads the root row
--     and its children as they are then and writes the one event (or none).
-- The root has all three triggers whatever `operations` says: its first write in the transaction decides
-- between created and updated, and a delete between updated and deleted; `operations` filters at commit.
-- Triggers already calling the right function are left alone (CREATE OR REPLACE FUNCTION keeps its
-- identity), so regenerating for a new event major needs no privilege on the ERP tables.
--
-- The flush runs once per aggregate and transaction, not per ERP statement: it keeps a
-- `SET search_path = pg_catalog, pg_temp` (~10 us per aggregate) rather than qualifying every operator.
-- It reads the root by its key and the children by their key column (index that column, as for any
-- foreign key), as SECURITY DEFINER: the owner of schema whk needs SELECT on those tables
-- (whk.enable_capture checks it).
CREATE OR REPLACE FUNCTION whk.capture_aggregate_install(tbl regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $install$
#variable_conflict use_column
DECLARE
    p_tbl      regclass := capture_aggregate_install.tbl;
    c          whk.capture_config%ROWTYPE;
    v_table    text;
    v_root     text;
    v_key      text;
    v_key_type text;
    v_owner    text;
    v_fn       text;
    v_members  text := '';
    v_changed  text;
    v_types    text := '';
    v_majors   text := '';
    v_elem     text;
    v_parts    text[];
    v_child    regclass;
    v_order    text;
    v_op       text;
    v_trg      text;
    v_sfx      text;
    v_type     text;
    v_major    integer;
    v_body     text;
    v_xact     text;
    v_cfn      text;
    v_n        integer;
    v_keep     text[];
BEGIN
    SELECT * INTO c FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl;
    IF NOT FOUND OR c.aggregate IS NULL THEN
        RAISE EXCEPTION 'table % is not captured as an aggregate', p_tbl
            USING ERRCODE = 'undefined_object', HINT = 'call whk.enable_capture(..., aggregate => ...) first';
    END IF;
    SELECT n.nspname || '.' || r.relname, format('%I.%I', n.nspname, r.relname) INTO v_table, v_root
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    v_key := c.key_columns[1];
    SELECT format_type(a.atttypid, a.atttypmod) INTO v_key_type
      FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname = v_key;
    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';
    v_fn := c.function_name || '_agg';

    -- The children, each nested under its table's name as a JSON array ordered by its primary key.
    FOREACH v_elem IN ARRAY c.aggregate LOOP
        v_parts := parse_ident(v_elem);
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        SELECT coalesce(' ORDER BY ' || string_agg(format('c.%I', a.attname), ', ' ORDER BY k.ord), '') INTO v_order
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = v_child AND i.indisprimary;
        v_members := v_members || CASE WHEN v_members = '' THEN '' ELSE ',' END
            || format(E'\n               %L, coalesce((SELECT jsonb_agg(to_jsonb(c)%s) FROM %I.%I AS c'
                      '\n                             WHERE c.%I = r.%I), ''[]'')',
                      v_parts[2], v_order, v_parts[1], v_parts[2], v_parts[3], v_key);
    END LOOP;

    -- The event type and major of each captured operation, baked in (the flush does no catalog lookup).
    FOREACH v_op IN ARRAY c.operations LOOP
        v_type := c.event_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated'
                                              ELSE '.deleted' END;
        SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = v_type;
        v_types := v_types || format(' WHEN %L THEN %L', v_op, v_type);
        v_majors := v_majors || format(' WHEN %L THEN %s', v_op, coalesce(v_major, 1));
    END LOOP;
    -- An UPDATE event lists the root's changed columns (only listened ones when `columns` is set) and the
    -- members whose rows were written.
    v_changed := 'SELECT e.key FROM jsonb_each(whk_root) AS e WHERE e.value IS DISTINCT FROM whk_old -> e.key'
        || CASE WHEN c.columns IS NOT NULL THEN format(' AND e.key = ANY (%L::text[])', c.columns) ELSE '' END
        || E'\n                             UNION SELECT unnest(whk_p.members) ORDER BY 1';

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION whk.%I()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $whk_capture$
#variable_conflict use_column
-- Generated by whk.enable_capture: the commit-time flush of aggregate %s (root %s). Do not edit: call
-- whk.enable_capture again. Fired once per key staged in whk.capture_aggregate_pending by a transaction.
DECLARE
    whk_p    whk.capture_aggregate_pending;
    whk_root jsonb;
    whk_nest jsonb;
    whk_old  jsonb;
    whk_op   text;
    whk_chg  text[];
BEGIN
    -- NEW is the row as first staged; later statements may have added to it: take (and remove) it now.
    DELETE FROM whk.capture_aggregate_pending AS p
     WHERE p.txid = NEW.txid AND p.aggregate = NEW.aggregate AND p.agg_key = NEW.agg_key
    RETURNING p.* INTO whk_p;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The aggregate as it is at commit.
    SELECT to_jsonb(r), jsonb_build_object(%s) INTO whk_root, whk_nest
      FROM %s AS r WHERE r.%I = whk_p.agg_key::%s;
    IF whk_root IS NULL THEN
        -- Gone at commit: deleted if it existed before the transaction; nothing if it was created in it,
        -- or if only children of a root that does not exist were written.
        IF whk_p.root_state IS DISTINCT FROM 'existed' THEN
            RETURN NULL;
        END IF;
        whk_op := 'DELETE';
        whk_old := whk_p.old_root;
    ELSIF whk_p.root_state = 'created' THEN
        whk_op := 'INSERT';
    ELSE
        -- Updated: old is the root before the transaction (the current row when only children changed).
        whk_op := 'UPDATE';
        whk_old := coalesce(whk_p.old_root, whk_root);
        whk_chg := ARRAY(%s);
        IF cardinality(whk_chg) = 0 THEN
            RETURN NULL;  -- written, but back to where it was
        END IF;
    END IF;
    IF whk_op <> ALL (%L::text[]) THEN
        RETURN NULL;  -- an operation not captured
    END IF;
    INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, source_table, operation, data,
                            old_data, changed)
    VALUES (gen_random_uuid(), CASE whk_op%s END, CASE whk_op%s END, whk_p.agg_key, %L, whk_op,
            CASE WHEN whk_op <> 'DELETE' THEN whk_root || whk_nest END, whk_old, whk_chg);
    -- The conditional wake-up, as in per-row capture (folds into one NOTIFY per transaction).
    IF whk.dispatcher_is_idle() THEN
        PERFORM pg_notify('whk_outbox', '');
    END IF;
    RETURN NULL;
END;
$whk_capture$$f$, v_fn, c.event_prefix, v_table, v_members, v_root, v_key, v_key_type, v_changed,
                   c.operations, v_types, v_majors, v_table);
    EXECUTE format('COMMENT ON FUNCTION whk.%I() IS %L', v_fn,
                   format('Commit-time flush of aggregate %s (root %s), generated by whk.enable_capture.',
                          c.event_prefix, v_table));
    IF v_owner <> current_user THEN
        EXECUTE format('ALTER FUNCTION whk.%I() OWNER TO %I', v_fn, v_owner);
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION whk.%I() FROM PUBLIC', v_fn);
    -- The deferred flush: one constraint trigger per aggregate on the shared staging table, filtered by WHEN
    -- (evaluated as the row is staged, no call). Constraint triggers cannot be replaced in place, and
    -- dropping one locks the staging table of every aggregate (waiting for open ERP transactions that
    -- staged rows): it is recreated only when its aggregate's prefix changed, not for a new event major.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass AND t.tgname = v_fn
                      AND t.tgfoid = format('whk.%I()', v_fn)::regprocedure
                      AND strpos(pg_get_triggerdef(t.oid),
                                 format(' WHEN ((new.aggregate = %L::text)) ', c.event_prefix)) > 0) THEN
        IF EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass AND t.tgname = v_fn) THEN
            EXECUTE format('DROP TRIGGER %I ON whk.capture_aggregate_pending', v_fn);
        END IF;
        EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER INSERT ON whk.capture_aggregate_pending '
                       'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.aggregate = %L) EXECUTE FUNCTION whk.%I()',
                       v_fn, c.event_prefix, v_fn);
    END IF;

    -- The staging functions: <function_name>_ins|_upd|_del on the root (the names per-row capture uses, so
    -- its triggers stay put), <function_name>_<n>i|u|d on the n-th child. Each is one INSERT ... SELECT
    -- over the statement's transition table, the key read as a column cast to text (root and children alike,
    -- so their keys compare as text) and the row turned into JSON only for the root's old image.
    v_xact := 'pg_catalog.pg_current_xact_id()';
    FOR v_op, v_trg, v_sfx IN SELECT o.op, o.trg, o.sfx
                                FROM (VALUES ('INSERT', 'whk_capture_insert', 'ins'),
                                             ('UPDATE', 'whk_capture_update', 'upd'),
                                             ('DELETE', 'whk_capture_delete', 'del')) AS o(op, trg, sfx) LOOP
        v_body := format(E'INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, root_state, old_root)'
                         '\n        SELECT %s, %L, s.k, s.state, s.j FROM (', v_xact, c.event_prefix)
            || CASE v_op
                   WHEN 'INSERT' THEN format(E'\n            SELECT r.%I::pg_catalog.text AS k, ''created'' AS state,'
                                             ' NULL::pg_catalog.jsonb AS j FROM whk_new AS r', v_key)
                   -- A key the UPDATE moved a row to did not exist before. Grouped, not joined: PL/pgSQL
                   -- caches a statement's plan per session, and a join planned for a one-row UPDATE (a
                   -- nested loop) would compare every old row with every new row of a later bulk UPDATE.
                   WHEN 'UPDATE' THEN format(E'\n            SELECT g.k, CASE WHEN pg_catalog.bool_or(g.o) THEN ''existed'''
                                             ' ELSE ''created'' END AS state,'
                                             ' (pg_catalog.array_agg(g.j) FILTER (WHERE g.o))[1] AS j'
                                             '\n              FROM (SELECT r.%1$I::pg_catalog.text AS k, true AS o,'
                                             ' pg_catalog.to_jsonb(r) AS j FROM whk_old AS r'
                                             '\n                    UNION ALL'
                                             '\n                    SELECT r.%1$I::pg_catalog.text, false, NULL FROM whk_new AS r) AS g'
                                             '\n             GROUP BY g.k', v_key)
                   ELSE format(E'\n            SELECT r.%I::pg_catalog.text AS k, ''existed'' AS state,'
                               ' pg_catalog.to_jsonb(r) AS j FROM whk_old AS r', v_key)
               END
            || E') AS s\n         WHERE s.k IS NOT NULL'
            -- A key's first write in the transaction decides (deleted then inserted again stays 'existed').
            || E'\n        ON CONFLICT (txid, aggregate, agg_key)'
            || E'\n        DO UPDATE SET root_state = excluded.root_state, old_root = excluded.old_root WHERE p.root_state IS NULL';
        PERFORM whk.capture_aggregate_stage_function(
            c.function_name || '_' || v_sfx, v_body, format('%s on the root %s of aggregate %s', v_op, v_table,
                                                            c.event_prefix), v_owner);
        IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                        WHERE t.tgrelid = p_tbl AND t.tgname = v_trg
                          AND t.tgfoid = format('whk.%I()', c.function_name || '_' || v_sfx)::regprocedure) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                           'EXECUTE FUNCTION whk.%I()',
                           v_trg, v_op, p_tbl,
                           CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                     WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                     ELSE 'OLD TABLE AS whk_old' END,
                           c.function_name || '_' || v_sfx);
        END IF;
    END LOOP;

    v_n := 0;
    v_keep := '{}';
    FOREACH v_elem IN ARRAY c.aggregate LOOP
        v_n := v_n + 1;
        v_parts := parse_ident(v_elem);
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        FOR v_op, v_trg, v_sfx IN SELECT o.op, o.trg, o.sfx
                                    FROM (VALUES ('INSERT', 'whk_aggregate_insert', 'i'),
                                                 ('UPDATE', 'whk_aggregate_update', 'u'),
                                                 ('DELETE', 'whk_aggregate_delete', 'd')) AS o(op, trg, sfx) LOOP
            v_cfn := c.function_name || '_' || v_n || v_sfx;
            v_keep := v_keep || v_cfn;
            v_body := format(E'INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, members)'
                             '\n        SELECT %s, %L, s.k, ARRAY[%L] FROM (', v_xact, c.event_prefix, v_parts[2])
                || CASE v_op
                       WHEN 'INSERT' THEN format('SELECT DISTINCT r.%I::pg_catalog.text AS k FROM whk_new AS r', v_parts[3])
                       WHEN 'UPDATE' THEN format('SELECT r.%1$I::pg_catalog.text AS k FROM whk_new AS r'
                                                 ' UNION SELECT r.%1$I::pg_catalog.text FROM whk_old AS r', v_parts[3])
                       ELSE format('SELECT DISTINCT r.%I::pg_catalog.text AS k FROM whk_old AS r', v_parts[3])
                   END
                || E') AS s\n         WHERE s.k IS NOT NULL'
                || E'\n        ON CONFLICT (txid, aggregate, agg_key)'
                || E'\n        DO UPDATE SET members = p.members OPERATOR(pg_catalog.||) excluded.members'
                || E'\n         WHERE NOT p.members OPERATOR(pg_catalog.@>) excluded.members';
            PERFORM whk.capture_aggregate_stage_function(
                v_cfn, v_body, format('%s on %s, child of aggregate %s', v_op, v_child, c.event_prefix), v_owner);
            IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                            WHERE t.tgrelid = v_child AND t.tgname = v_trg
                              AND t.tgfoid = format('whk.%I()', v_cfn)::regprocedure) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                               'EXECUTE FUNCTION whk.%I()',
                               v_trg, v_op, v_child,
                               CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                         WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                         ELSE 'OLD TABLE AS whk_old' END,
                               v_cfn);
            END IF;
        END LOOP;
    END LOOP;
    -- Staging functions of children no longer listed (their triggers are gone: whk.enable_capture).
    FOR v_cfn IN SELECT p.proname FROM pg_proc p
                  WHERE p.pronamespace = 'whk'::regnamespace
                    AND left(p.proname, length(c.function_name) + 1) = c.function_name || '_'
                    AND substr(p.proname, length(c.function_name) + 2) ~ '^[0-9]+[iud]$'
                    AND NOT p.proname = ANY (v_keep) LOOP
        EXECUTE format('DROP FUNCTION whk.%I()', v_cfn);
    END LOOP;
    RETURN c.function_name;
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_install(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_install(regclass) IS
    'Regenerate the aggregate capture of a root table: staging triggers on it and its children, the commit-time flush.';
-- <<< sql/functions/capture/capture_aggregate_install.sql

-- >>> sql/functions/capture/capture_aggregate_stage_function.sql
-- whk.capture_aggregate_stage_function: write one generated staging trigger function of aggregate capture
-- (called by whk.capture_aggregate_install): `body` is its one INSERT into whk.capture_aggregate_pending.
-- Like the per-row capture code (whk.capture_install): SECURITY DEFINER owned by the owner of schema whk
-- (ERP roles need no grant on whk), no SET clause (each costs every ERP statement ~10 us), every function
-- and operator in the body schema-qualified and the transition tables resolved before any schema, so the
-- caller's search_path cannot redirect a name. Generated rather than generic: the key is read as a column
-- (a generic function would have to turn every row into JSON to find it), with no branch on TG_OP.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_stage_function(name text, body text, what text, owner text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $install$
BEGIN
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION whk.%I()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $whk_capture$
-- Generated by whk.enable_capture: stages %s (the event is written at commit). Do not edit: call
-- whk.enable_capture again. Every name is schema-qualified: the caller's search_path cannot redirect any.
BEGIN
    %s;
    RETURN NULL;
END;
$whk_capture$$f$, name, what, body);
    EXECUTE format('COMMENT ON FUNCTION whk.%I() IS %L', name,
                   format('Aggregate capture staging (%s), generated by whk.enable_capture.', what));
    IF owner <> current_user THEN
        EXECUTE format('ALTER FUNCTION whk.%I() OWNER TO %I', name, owner);
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION whk.%I() FROM PUBLIC', name);
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_stage_function(text, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_stage_function(text, text, text, text) IS
    'Write one generated staging trigger function of aggregate capture (owner, grants, comment).';
-- <<< sql/functions/capture/capture_aggregate_stage_function.sql

-- >>> sql/functions/capture/capture_aggregate_uninstall.sql
-- whk.capture_aggregate_uninstall: remove what whk.capture_aggregate_install attached for an aggregate:
-- the staging triggers of the given children ('schema.table.column' elements of
-- whk.capture_config.aggregate; tables dropped since are skipped) and, when function_name is given, the
-- rest: the deferred flush (constraint trigger <function_name>_agg on whk.capture_aggregate_pending and
-- its function) and the children's staging functions <function_name>_<n>i|u|d. The root's own triggers
-- and functions are per-row capture's names and go with them (whk.disable_capture, whk.capture_install).
-- Used by whk.enable_capture (children removed, or back to per-row capture) and whk.disable_capture.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_uninstall(children text[], function_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_elem  text;
    v_parts text[];
    v_child regclass;
    v_trg   text;
BEGIN
    FOREACH v_elem IN ARRAY coalesce(children, '{}') LOOP
        v_parts := parse_ident(v_elem);
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        CONTINUE WHEN v_child IS NULL;
        FOREACH v_trg IN ARRAY ARRAY['whk_aggregate_insert', 'whk_aggregate_update', 'whk_aggregate_delete'] LOOP
            IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = v_child AND t.tgname = v_trg) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', v_trg, v_child);
            END IF;
        END LOOP;
    END LOOP;
    IF function_name IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass
                                                AND t.tgname = function_name || '_agg') THEN
            EXECUTE format('DROP TRIGGER %I ON whk.capture_aggregate_pending', function_name || '_agg');
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS whk.%I()', function_name || '_agg');
        FOR v_trg IN SELECT p.proname FROM pg_proc p
                      WHERE p.pronamespace = 'whk'::regnamespace
                        AND left(p.proname, length(function_name) + 1) = function_name || '_'
                        AND substr(p.proname, length(function_name) + 2) ~ '^[0-9]+[iud]$' LOOP
            EXECUTE format('DROP FUNCTION whk.%I()', v_trg);
        END LOOP;
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_uninstall(text[], text) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_uninstall(text[], text) IS
    'Drop the staging triggers of aggregate children and, given its function name, an aggregate''s flush and staging functions.';
-- <<< sql/functions/capture/capture_aggregate_uninstall.sql

-- >>> sql/functions/capture/capture_data_schema.sql
-- whk.capture_data_schema: the JSON Schema (draft 2020-12) of the `data` of a captured row event, derived
-- from the table's columns. whk.enable_capture registers it for <prefix>.created|updated|deleted when the
-- type is not in the catalog yet. No column is required (columns come and go); each has its JSON type
-- (numeric and float also allow the strings "NaN"/"Infinity"; nullable columns allow null).
CREATE OR REPLACE FUNCTION whk.capture_data_schema(tbl regclass, op text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   jsonb;
    v_props jsonb;
BEGIN
    SELECT coalesce(jsonb_object_agg(a.attname, s.schema ORDER BY a.attnum), '{}'::jsonb) INTO v_props
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
      CROSS JOIN LATERAL (
          SELECT coalesce(b.oid, t.oid) AS oid, coalesce(b.typcategory, t.typcategory) AS cat
      ) AS base
      CROSS JOIN LATERAL (
          SELECT CASE
                     WHEN base.oid IN ('json'::regtype, 'jsonb'::regtype) THEN '{}'::jsonb
                     ELSE jsonb_build_object('type',
                         CASE WHEN a.attnotnull THEN j.types ELSE j.types || '["null"]'::jsonb END)
                 END AS schema
            FROM (SELECT CASE
                             WHEN base.oid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'oid'::regtype)
                                 THEN '["integer"]'::jsonb
                             WHEN base.oid IN ('numeric'::regtype, 'float4'::regtype, 'float8'::regtype)
                                 THEN '["number", "string"]'::jsonb
                             WHEN base.cat = 'B' THEN '["boolean"]'::jsonb
                             WHEN base.cat = 'A' THEN '["array"]'::jsonb
                             WHEN base.cat = 'C' THEN '["object"]'::jsonb
                             ELSE '["string"]'::jsonb
                         END AS types) AS j
      ) AS s
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
    v_row := jsonb_build_object('type', 'object', 'properties', v_props);
    RETURN jsonb_build_object(
        '$schema', 'https://json-schema.org/draft/2020-12/schema',
        'type', 'object',
        'required', jsonb_build_array('op', 'table', 'new', 'old', 'changed'),
        'properties', jsonb_build_object(
            'op', jsonb_build_object('const', op),
            'table', jsonb_build_object('type', 'string'),
            'new', CASE WHEN op = 'DELETE' THEN '{"type": "null"}'::jsonb ELSE v_row END,
            'old', CASE WHEN op = 'INSERT' THEN '{"type": "null"}'::jsonb ELSE v_row END,
            'changed', CASE WHEN op = 'UPDATE'
                            THEN '{"type": "array", "items": {"type": "string"}, "minItems": 1}'::jsonb
                            ELSE '{"type": "null"}'::jsonb END));
END;
$$;
COMMENT ON FUNCTION whk.capture_data_schema(regclass, text) IS
    'JSON Schema of the data of a captured INSERT/UPDATE/DELETE event of a table, from its columns.';
-- <<< sql/functions/capture/capture_data_schema.sql

-- >>> sql/functions/capture/capture_install.sql
-- whk.capture_install: (re)generate the capture trigger functions of one table from whk.capture_config
-- (one per captured operation: <function_name>_ins, _upd, _del) and (re)attach its statement-level
-- triggers; a table captured as an aggregate root is handed to whk.capture_aggregate_install. Called by whk.enable_capture and, when a captured event type gets a new major version, by
-- whk.register_event_type.
--
-- Why a generated function per table instead of one generic function: PL/pgSQL caches the plan of static
-- SQL, while a generic function would plan dynamic SQL (EXECUTE) on every ERP statement. The generated
-- function reads only the statement's transition tables (no lookups, no catalog access) and writes every
-- event of the statement with one INSERT ... SELECT. It is SECURITY DEFINER, owned by the owner of schema
-- whk: ERP roles need no privilege on whk.
--
-- Its names cannot be hijacked through the caller's search_path: every function, operator and type in the
-- generated code is schema-qualified (pg_catalog.to_jsonb, OPERATOR(pg_catalog.->>), ::pg_catalog.text,
-- whk.outbox) and the transition tables are resolved before any schema. That pins resolution without a
-- `SET search_path` clause, which costs every ERP statement ~10 us (the GUC save/restore around each call
-- and the search-path recomputation; measured, migration 0015: 8% of a single-row INSERT's commit). Only a
-- user-supplied `condition` is SQL we do not write; a function that carries one keeps
-- `SET search_path = pg_catalog, pg_temp`. No other SET clause either: any clause makes every call save and
-- restore the GUC state (`SET jit = off` alone measured ~7 us per statement, migration 0017). The plan
-- shapes that need no setting: INSERT and DELETE read one transition table (linear at any size), and an
-- UPDATE's old/new join is kept off the session's cached plan past 8 rows (below). Left: a cached INSERT or
-- DELETE plan whose first execution had millions of rows could be JIT-compiled at every later execution.
--
-- Foreseeable ERP values cannot make it fail: rows become JSON with to_jsonb (numeric NaN -> "NaN",
-- infinity timestamps -> "infinity", bytea -> "\x..", any size up to jsonb's 255 MB limit), changes are
-- detected by comparing those JSON values (no dependence on the column types' equality operators), and
-- the key is read from the JSON too. Only a user-supplied `condition` references columns directly; it is
-- checked by whk.enable_capture before anything is generated.
CREATE OR REPLACE FUNCTION whk.capture_install(tbl regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $install$
#variable_conflict use_column
DECLARE
    p_tbl     regclass := capture_install.tbl;
    c         whk.capture_config%ROWTYPE;
    v_table   text;
    v_owner   text;
    v_cols    text := '';
    v_key     text;
    v_alias   text;
    v_body    text;
    v_head    text;
    v_ins     text;
    v_upd     text;
    v_del     text;
    v_filter  text;
    v_op      text;
    v_type    text;
    v_major   integer;
    v_fn      text;
    v_stmt    text;
    v_numbered text;
    v_sfx     text;
BEGIN
    SELECT * INTO c FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not captured', p_tbl
            USING ERRCODE = 'undefined_object', HINT = 'call whk.enable_capture first';
    END IF;
    IF c.aggregate IS NOT NULL THEN
        -- One event per aggregate and transaction, written at commit: another mechanism entirely.
        RETURN whk.capture_aggregate_install(p_tbl);
    END IF;
    SELECT n.nspname || '.' || r.relname INTO v_table
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    IF c.condition IS NOT NULL THEN
        v_cols := ', whk_row.*';
    END IF;

    -- The event key, read from the row's JSON (%s = a jsonb expression of the row): one column as text,
    -- several as a JSON array. Reading it from the JSON keeps working (as NULL) if the column is renamed.
    IF cardinality(c.key_columns) = 1 THEN
        v_key := format('(%%s) OPERATOR(pg_catalog.->>) %L', c.key_columns[1]);
    ELSIF cardinality(c.key_columns) > 1 THEN
        v_key := format('pg_catalog.jsonb_build_array(%s)::pg_catalog.text',
                        (SELECT string_agg(format('(%%s) OPERATOR(pg_catalog.->) %L', k), ', ')
                           FROM unnest(c.key_columns) AS k));
    ELSE
        v_key := 'NULL';
    END IF;

    FOREACH v_op IN ARRAY c.operations LOOP
        v_type := c.event_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated'
                                              ELSE '.deleted' END;
        SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = v_type;
        -- Only what varies per row is written (migration 0013): the row image(s) and the key, plus constants.
        -- The envelope {"type", "timestamp", "data"} is rebuilt by whk.event_envelope when the event is read,
        -- so an INSERT writes no more per row than the bare outbox trigger (to_jsonb(row), key, constants).
        -- All of it lives inside the one INSERT: each PL/pgSQL expression outside it is set up again in
        -- every ERP transaction (measured).
        v_head := E'INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, source_table, operation, '
                  || CASE v_op WHEN 'INSERT' THEN 'data' WHEN 'DELETE' THEN 'old_data'
                               ELSE 'data, old_data, changed' END || ')'
                  || format(E'\n        SELECT pg_catalog.gen_random_uuid(), %L, %s, ', v_type, coalesce(v_major, 1));
        IF v_op IN ('INSERT', 'DELETE') THEN
            -- One row image: data (INSERT) or old_data (DELETE).
            v_alias := CASE v_op WHEN 'INSERT' THEN 'new' ELSE 'old' END;
            v_body := v_head
                || replace(v_key, '%s', v_alias || '.whk_j') || ','
                || format(E'\n               %L, %L, %s.whk_j', v_table, v_op, v_alias)
                -- OFFSET 0 keeps the planner from pulling the sub-select up, which would compute to_jsonb
                -- twice per row (once for the key, once for the image). With a condition the sub-select is
                -- left to be pulled up: the filter then runs before any row is turned into JSON.
                || format(E'\n        FROM (SELECT pg_catalog.to_jsonb(whk_row) AS whk_j%s FROM %s AS whk_row%s) AS %s',
                          v_cols, CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END,
                          CASE WHEN c.condition IS NULL THEN ' OFFSET 0' ELSE '' END, v_alias)
                || CASE WHEN c.condition IS NOT NULL THEN
                       format(E'\n        LEFT JOIN (SELECT whk_row.* FROM %s AS whk_row) AS %s ON false',
                              CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END,
                              CASE v_op WHEN 'INSERT' THEN 'old' ELSE 'new' END)
                       || E'\n        WHERE (' || c.condition || ')' ELSE '' END;
            IF v_op = 'INSERT' THEN
                v_ins := v_body;
            ELSE
                v_del := v_body;
            END IF;
        ELSE
            -- Old and new transition rows are paired by position: PostgreSQL appends both images of an
            -- updated row together, so the n-th old row and the n-th new row are the same row (this also
            -- holds when the update changes the primary key). Changes are found by comparing the rows' JSON,
            -- which works for every column type (point, xml, json have no equality operator).
            v_filter := 'whk_c.whk_changed OPERATOR(pg_catalog.<>) ''{}''';
            IF c.columns IS NOT NULL THEN
                v_filter := v_filter
                    || format(' AND whk_c.whk_changed OPERATOR(pg_catalog.&&) %L::pg_catalog.text[]', c.columns);
            END IF;
            IF c.condition IS NOT NULL THEN
                v_filter := v_filter || E'\n          AND (' || c.condition || ')';
            END IF;
            -- Each side numbered in scan order (%1$s = its transition table). ROWS frame: with the default
            -- (RANGE) frame and no ORDER BY every row is a peer of every other, so PostgreSQL 15 copies the
            -- whole transition table into a second tuplestore (on disk past work_mem) before it numbers the
            -- first row. A ROWS frame numbers the rows as it reads.
            v_numbered := format(E'(SELECT pg_catalog.row_number() OVER (ROWS UNBOUNDED PRECEDING) AS whk_rn,'
                                 '\n                     pg_catalog.to_jsonb(whk_row) AS whk_j%s'
                                 '\n              FROM %%1$s AS whk_row)', v_cols);
            v_stmt := v_head
                || replace(v_key, '%s', 'new.whk_j') || ','
                || format(E'\n               %L, ''UPDATE'', new.whk_j, old.whk_j, whk_c.whk_changed', v_table)
                || E'\n        FROM ' || format(v_numbered, 'whk_new') || ' AS new'
                || E'\n        JOIN ' || format(v_numbered, 'whk_old') || ' AS old'
                || E'\n          ON old.whk_rn OPERATOR(pg_catalog.=) new.whk_rn'
                || E'\n        CROSS JOIN LATERAL (SELECT ARRAY(SELECT e.key FROM pg_catalog.jsonb_each(new.whk_j) AS e'
                -- e.value is never NULL, so this is `IS DISTINCT FROM` with a qualified operator.
                || E'\n                                          WHERE (e.value OPERATOR(pg_catalog.=)'
                || E'\n                                                 (old.whk_j OPERATOR(pg_catalog.->) e.key)) IS NOT TRUE'
                -- OFFSET 0: computed once per row. Pulled up, the ARRAY sub-select ran twice per row (for
                -- the filter and for the output column).
                || E'\n                                          ORDER BY e.key) AS whk_changed OFFSET 0) AS whk_c'
                || E'\n        WHERE ' || v_filter;
            -- Old and new rows are paired by a join, and PL/pgSQL plans a static statement once per session,
            -- for the transition table it saw first: after a one-row UPDATE the cached plan was a nested
            -- loop that rescanned the old rows for every new row (5,000 rows took 90 s, measured), and after
            -- a large one every later statement ran the large plan. Statements of more than 8 rows are
            -- planned for their own size (EXECUTE: ~0.5 ms of planning, nothing next to their rows); the
            -- cached plan only ever sees up to 8. EXECUTE does not set FOUND, the wake-up test reads it.
            v_upd := format(E'IF EXISTS (SELECT FROM whk_new OFFSET 8) THEN'
                            '\n            EXECUTE %L;'
                            '\n            GET DIAGNOSTICS whk_n = ROW_COUNT;'
                            '\n            FOUND := whk_n OPERATOR(pg_catalog.>) 0;'
                            '\n        ELSE'
                            '\n        %s;'
                            '\n        END IF', v_stmt, v_stmt);
        END IF;
    END LOOP;

    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';

    -- One function per captured operation (migration 0019), <function_name>_ins, _upd and _del (at most 63
    -- characters: function_name has at most 59). Each trigger runs only its own statement: no TG_OP test,
    -- which cost every captured statement ~2 us (measured). Create or re-point the trigger of each captured
    -- operation, drop the trigger and function of the others (quietly: only those that exist). A trigger
    -- already calling its function is left alone: CREATE OR REPLACE FUNCTION kept its identity, so
    -- regenerating for a new event major needs no privilege on the ERP table.
    FOR v_op, v_type, v_sfx IN SELECT o.op, o.trg, o.sfx
                                  FROM (VALUES ('INSERT', 'whk_capture_insert', 'ins'),
                                               ('UPDATE', 'whk_capture_update', 'upd'),
                                               ('DELETE', 'whk_capture_delete', 'del')) AS o(op, trg, sfx) LOOP
        v_fn := format('whk.%I()', c.function_name || '_' || v_sfx);
        IF v_op = ANY (c.operations) THEN
            EXECUTE format($f$
CREATE OR REPLACE FUNCTION %s
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER%s
AS $whk_capture$
#variable_conflict use_column
-- Generated by whk.enable_capture: %s on %s (prefix %s). Do not edit: call whk.enable_capture again.
-- Every name is schema-qualified: the caller's search_path cannot redirect any of them.%s
BEGIN
    %s;
    -- The wake-up of whk.wake_dispatchers, inlined: at most one NOTIFY per statement, only when the INSERT
    -- wrote rows (FOUND) and a live dispatcher is idle (whk.dispatcher_is_idle, inlined by the planner: no
    -- call); identical notifications fold per transaction.
    IF FOUND AND whk.dispatcher_is_idle() THEN
        PERFORM pg_catalog.pg_notify('whk_outbox', '');
    END IF;
    RETURN NULL;
END;
$whk_capture$$f$, v_fn,
                           CASE WHEN c.condition IS NULL THEN ''
                                -- the condition is the caller's SQL: resolve its names in pg_catalog only
                                ELSE E'\nSET search_path = pg_catalog, pg_temp' END,
                           v_op, v_table, c.event_prefix,
                           CASE WHEN v_op = 'UPDATE' THEN E'\nDECLARE\n    whk_n bigint;' ELSE '' END,
                           CASE v_op WHEN 'INSERT' THEN v_ins WHEN 'UPDATE' THEN v_upd ELSE v_del END);
            EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_fn,
                           format('Capture trigger (%s) of %s (events %s.*), generated by whk.enable_capture.',
                                  v_op, v_table, c.event_prefix));
            IF v_owner <> current_user THEN
                EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_fn, v_owner);
            END IF;
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
            IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                            WHERE t.tgrelid = p_tbl AND t.tgname = v_type AND t.tgfoid = v_fn::regprocedure) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                               'EXECUTE FUNCTION %s',
                               v_type, v_op, p_tbl,
                               CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                         WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                         ELSE 'OLD TABLE AS whk_old' END,
                               v_fn);
            END IF;
        ELSE
            IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p_tbl AND t.tgname = v_type) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', v_type, p_tbl);
            END IF;
            IF to_regprocedure(v_fn) IS NOT NULL THEN
                EXECUTE format('DROP FUNCTION %s', v_fn);
            END IF;
        END IF;
    END LOOP;
    RETURN c.function_name;
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_install(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_install(regclass) IS
    'Regenerate the capture trigger function and triggers of a table from whk.capture_config.';
-- <<< sql/functions/capture/capture_install.sql

-- >>> sql/functions/capture/disable_capture.sql
-- whk.disable_capture: stop capturing a table. Drops its three triggers and its generated functions (for an
-- aggregate root also its children's triggers and its flush) and
-- forgets its settings; events already in the outbox are kept and still delivered. The event types stay
-- in the catalog (their history and schemas remain). Returns false when the table was not captured.
CREATE OR REPLACE FUNCTION whk.disable_capture(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_tbl regclass := disable_capture.tbl;
    v_fn  text;
    v_agg text[];
    v_prefix text;
BEGIN
    DELETE FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl
    RETURNING cc.function_name, cc.aggregate, cc.event_prefix INTO v_fn, v_agg, v_prefix;
    IF v_fn IS NULL THEN
        RETURN false;
    END IF;
    IF v_agg IS NOT NULL THEN
        -- An aggregate root: its children's staging triggers and its commit-time flush.
        PERFORM whk.capture_aggregate_uninstall(v_agg, v_fn);
        -- What this transaction staged for it will not be flushed now: it must not outlive the transaction.
        DELETE FROM whk.capture_aggregate_pending AS p
         WHERE p.txid = pg_current_xact_id() AND p.aggregate = v_prefix;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class r WHERE r.oid = p_tbl) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_insert ON %s', p_tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_update ON %s', p_tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_delete ON %s', p_tbl);
    END IF;
    -- One function per operation (migration 0019).
    EXECUTE format('DROP FUNCTION IF EXISTS whk.%I(), whk.%I(), whk.%I()',
                   v_fn || '_ins', v_fn || '_upd', v_fn || '_del');
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.disable_capture(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.disable_capture(regclass) IS
    'Stop capturing a table: drop its triggers and generated functions; queued events stay.';
-- <<< sql/functions/capture/disable_capture.sql

-- >>> sql/functions/capture/dispatcher_is_idle.sql
-- whk.dispatcher_is_idle: the wake-up's one test, "is a live dispatcher idle right now?", shared by every
-- writer that may NOTIFY (generated capture triggers, whk.emit, whk.wake_dispatchers).
-- The sequence whk.dispatcher_idle_until holds, in epoch seconds, the time until which some idle dispatcher
-- counts as live (kept by the trigger whk.dispatchers_idle_refresh; 0 = none idle). Reading it is a
-- function call, not a query. to_timestamp(deadline) > now() rather than deadline > date_part('epoch',
-- now()): date_part parses its unit text at every call (~2 us of every captured statement, measured).
-- SQL-standard body, no SET clause, not SECURITY DEFINER: the planner inlines it into the caller's
-- expression (checked by EXPLAIN VERBOSE in tests/db/test_capture_wakeup.py), so sharing it costs the ERP
-- statement nothing, and its names are bound when it is created (no search_path can redirect them). It
-- runs with the caller's rights: the callers are SECURITY DEFINER functions owned by the owner of whk.
CREATE OR REPLACE FUNCTION whk.dispatcher_is_idle()
RETURNS boolean
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT pg_catalog.to_timestamp(pg_catalog.pg_sequence_last_value('whk.dispatcher_idle_until'::pg_catalog.regclass)
                                   ::pg_catalog.float8) OPERATOR(pg_catalog.>) pg_catalog.now();
END;
REVOKE EXECUTE ON FUNCTION whk.dispatcher_is_idle() FROM PUBLIC;
COMMENT ON FUNCTION whk.dispatcher_is_idle() IS
    'Whether a live dispatcher is idle (whk.dispatcher_idle_until > now): the test before a wake-up NOTIFY.';
-- <<< sql/functions/capture/dispatcher_is_idle.sql

-- >>> sql/functions/capture/emit.sql
-- whk.emit: a custom event from any module, written to the outbox in the caller's transaction
-- (rollback = no event). payload is the event's `data`, stored as outbox.data; the delivered body is the
-- Standard Webhooks envelope {"type", "timestamp", "data"} built by whk.event_envelope (timestamp = the
-- transaction's time). The returned uuid becomes the `webhook-id` header.
-- Strict types are validated here, on the envelope of the row just written, exactly as it will be
-- delivered (an invalid payload raises, with a hint, and the raise undoes the row); others are validated
-- by the router, which flags invalid events (outbox.valid / validation_error) instead of dropping them.
-- deliver_at delays delivery (NULL = now). key orders events per entity for ordered webhooks.
CREATE OR REPLACE FUNCTION whk.emit(event_type text, payload jsonb, key text DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type     text := emit.event_type;
    v_major    integer;
    v_minor    integer;
    v_strict   boolean;
    v_id       uuid := gen_random_uuid();
    v_envelope jsonb;
    v_error    text;
BEGIN
    SELECT e.current_major, e.current_minor, e.strict INTO v_major, v_minor, v_strict
      FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'register it first: SELECT whk.register_event_type(''' || coalesce(p_type, 'module.thing_happened')
                         || ''', ''{"type": "object"}'', ''what it means'')';
    END IF;
    INSERT INTO whk.outbox AS o (event_id, event_type, event_version, event_key, data, operation, deliver_at, valid)
    VALUES (v_id, p_type, v_major, emit.key, coalesce(emit.payload, '{}'::jsonb), 'EMIT', emit.deliver_at,
            CASE WHEN v_strict THEN true END)
    RETURNING CASE WHEN v_strict THEN whk.event_envelope(o) END INTO v_envelope;
    IF v_strict THEN
        v_error := whk.validate_payload(p_type, v_major, v_envelope);
        IF v_error IS NOT NULL THEN
            RAISE EXCEPTION 'invalid payload for strict event type % (version %.%): %', p_type, v_major, v_minor, v_error
                USING ERRCODE = 'check_violation',
                      DETAIL = v_error,
                      HINT = format('make the payload match the schema (SELECT schema FROM whk.whk_02_eventos_versoes v '
                                    'JOIN whk.whk_02_eventos e ON e.id = v.event_type_id WHERE e.name = %L '
                                    'ORDER BY major DESC, minor DESC LIMIT 1), or publish a compatible schema '
                                    'with whk.register_event_type', p_type);
        END IF;
    END IF;
    -- The wake-up of whk.wake_dispatchers, not a call to it (migration 0020): a PERFORM is a query of its own,
    -- ~9 us per event; the test itself is inlined by the planner.
    IF whk.dispatcher_is_idle() THEN
        PERFORM pg_notify('whk_outbox', '');
    END IF;
    RETURN v_id;
END;
$$;
GRANT EXECUTE ON FUNCTION whk.emit(text, jsonb, text, timestamptz) TO PUBLIC;
COMMENT ON FUNCTION whk.emit(text, jsonb, text, timestamptz) IS
    'Emit a custom event in the caller''s transaction; returns its id (the webhook-id). Strict types are validated.';
-- <<< sql/functions/capture/emit.sql

-- >>> sql/functions/capture/emit_system.sql
-- whk.emit_system: the platform's own events, system.startup | shutdown | health_check | backup_completed.
-- The dispatcher and the API call it when they start and stop; DBAs call it after a backup, e.g.
--   SELECT whk.emit_system('backup_completed', 'pg_basebackup', '{"label": "nightly", "bytes": 123}');
-- health_check with details NULL attaches whk.system_health() (outbox backlog, live dispatchers).
CREATE OR REPLACE FUNCTION whk.emit_system(kind text, component text DEFAULT 'database', details jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF kind IS NULL OR kind NOT IN ('startup', 'shutdown', 'health_check', 'backup_completed') THEN
        RAISE EXCEPTION 'unknown system event kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use startup, shutdown, health_check or backup_completed';
    END IF;
    RETURN whk.emit(
        'system.' || kind,
        jsonb_build_object(
            'component', coalesce(component, 'database'),
            'database', current_database(),
            'details', coalesce(details, CASE WHEN kind = 'health_check' THEN whk.system_health() END, '{}'::jsonb)),
        'system');
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.emit_system(text, text, jsonb) FROM PUBLIC;
-- The dispatcher announces its own start and stop.
GRANT EXECUTE ON FUNCTION whk.emit_system(text, text, jsonb) TO whk_dispatcher;
COMMENT ON FUNCTION whk.emit_system(text, text, jsonb) IS
    'Emit system.startup|shutdown|health_check|backup_completed from a service or a DBA script.';
-- <<< sql/functions/capture/emit_system.sql

-- >>> sql/functions/capture/enable_capture.sql
-- whk.enable_capture: every committed INSERT/UPDATE/DELETE on an ERP table becomes an outbox event of type
-- <event_prefix>.created|updated|deleted, written in the ERP's own transaction by statement-level AFTER
-- triggers (one INSERT ... SELECT per statement, whatever the number of rows).
--   key_column  entity key for ordering (NULL = the primary key; a composite key becomes a JSON array)
--   columns     listened columns: an UPDATE emits only when one of them really changed (NULL = any);
--               an UPDATE that changes nothing never emits
--   condition   SQL boolean over `new` and `old` (the row images; on INSERT every column of old is NULL,
--               on DELETE every column of new is NULL); rows for which it is not true write nothing
--   operations  which of INSERT/UPDATE/DELETE to capture (default all three)
--   aggregate   NULL (default): one event per row. Otherwise the table is an aggregate root: the rows of
--               one transaction that share its key (its own row, and the rows of the child tables listed
--               as 'schema.table.column', the column holding the root's key) become ONE event at commit,
--               with each child's rows nested in `new` under the child table's name ('{}' = coalescing
--               the root's own writes, no children). See whk.capture_aggregate_install and docs/capture.md.
-- Idempotent: calling it again with the same arguments changes nothing; with other arguments it replaces
-- the table's capture settings. Event types missing from the catalog are registered with a schema derived
-- from the table's columns (whk.capture_data_schema). Returns true when triggers were (re)generated, false
-- when the table was already captured with exactly these settings. Runs with the caller's rights: the caller needs the
-- TRIGGER privilege on the table and must be (a member of) the owner of schema whk.
CREATE OR REPLACE FUNCTION whk.enable_capture(
    tbl          regclass,
    event_prefix text,
    key_column   text DEFAULT NULL,
    columns      text[] DEFAULT NULL,
    condition    text DEFAULT NULL,
    operations   text[] DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE'],
    aggregate    text[] DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_tbl     regclass := enable_capture.tbl;
    p_prefix  text := enable_capture.event_prefix;
    p_key     text := nullif(enable_capture.key_column, '');
    p_columns text[] := enable_capture.columns;
    p_cond    text := nullif(btrim(enable_capture.condition), '');
    p_ops     text[] := ARRAY(SELECT DISTINCT upper(o) FROM unnest(enable_capture.operations) AS o ORDER BY 1);
    v_kind    "char";
    v_nsp     text;
    v_rel     text;
    v_keys    text[];
    v_missing text;
    v_fn      text;
    v_other   regclass;
    v_op      text;
    v_type    text;
    v_old     whk.capture_config%ROWTYPE;
    p_agg     text[];
BEGIN
    IF p_tbl IS NULL THEN
        RAISE EXCEPTION 'enable_capture needs a table' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.relkind, n.nspname, r.relname INTO v_kind, v_nsp, v_rel
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', p_tbl
            USING ERRCODE = 'wrong_object_type', HINT = 'capture the table a view or foreign table reads from';
    END IF;
    IF v_nsp IN ('whk', 'pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'tables of schema % cannot be captured', v_nsp USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_prefix IS NULL OR p_prefix !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' THEN
        RAISE EXCEPTION 'invalid event prefix %', coalesce(quote_literal(p_prefix), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use a lowercase dotted name such as ''order'' or ''sales.invoice'' (events become <prefix>.created|updated|deleted)';
    END IF;
    SELECT cc.tbl INTO v_other FROM whk.capture_config cc WHERE cc.event_prefix = p_prefix AND cc.tbl <> p_tbl;
    IF FOUND THEN
        RAISE EXCEPTION 'event prefix % is already used by table %', p_prefix, v_other
            USING ERRCODE = 'unique_violation', HINT = 'each captured table needs its own prefix';
    END IF;
    IF cardinality(p_ops) = 0 OR NOT p_ops <@ ARRAY['DELETE', 'INSERT', 'UPDATE'] THEN
        RAISE EXCEPTION 'invalid operations %', enable_capture.operations
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use a non-empty subset of {INSERT,UPDATE,DELETE}';
    END IF;

    -- Key: the given column, else the primary key.
    IF p_key IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname = p_key
                        AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in %', quote_ident(p_key), p_tbl
                USING ERRCODE = 'undefined_column';
        END IF;
        v_keys := ARRAY[p_key];
    ELSE
        SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}') INTO v_keys
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = p_tbl AND i.indisprimary;
    END IF;

    IF p_columns IS NOT NULL THEN
        SELECT string_agg(quote_ident(col), ', ') INTO v_missing
          FROM unnest(p_columns) AS col
         WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname = col
                            AND a.attnum > 0 AND NOT a.attisdropped);
        IF v_missing IS NOT NULL OR cardinality(p_columns) = 0 THEN
            RAISE EXCEPTION 'listened columns must be existing columns of %: % not found', p_tbl,
                coalesce(v_missing, 'empty list')
                USING ERRCODE = 'undefined_column', HINT = 'pass NULL to listen to every column';
        END IF;
        p_columns := ARRAY(SELECT DISTINCT col FROM unnest(p_columns) AS col ORDER BY 1);
    END IF;

    IF p_cond IS NOT NULL THEN
        -- The condition is pasted into the generated trigger, so it must be one expression over new/old.
        IF strpos(p_cond, ';') > 0 OR strpos(p_cond, '$whk_capture$') > 0 THEN
            RAISE EXCEPTION 'the capture condition must be a single SQL expression (no ";")'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname IN ('whk_j', 'whk_rn')
                    AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'a condition cannot be used on % because it has a column named whk_j or whk_rn', p_tbl
                USING ERRCODE = 'duplicate_column';
        END IF;
        BEGIN
            EXECUTE format('SELECT (%s)::boolean FROM %s AS new, %s AS old LIMIT 0', p_cond, p_tbl, p_tbl);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'invalid capture condition for %: %', p_tbl, SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'write a boolean SQL expression over new.<column> and old.<column>, e.g. new.total > 100';
        END;
    END IF;

    IF enable_capture.aggregate IS NOT NULL THEN
        p_agg := whk.capture_aggregate_check(p_tbl, p_prefix, v_keys, p_cond, enable_capture.aggregate);
    END IF;

    SELECT * INTO v_old FROM whk.capture_config cc WHERE cc.tbl = p_tbl;
    v_fn := coalesce(v_old.function_name,
                     CASE WHEN length('capture_' || v_nsp || '_' || v_rel) <= 50
                               AND NOT EXISTS (SELECT 1 FROM whk.capture_config cc
                                               WHERE cc.function_name = 'capture_' || v_nsp || '_' || v_rel)
                          THEN 'capture_' || v_nsp || '_' || v_rel
                          ELSE 'capture_' || left(v_rel, 40) || '_' || p_tbl::oid END);

    -- Register the event types the catalog does not know yet (known ones keep their schema).
    FOREACH v_op IN ARRAY p_ops LOOP
        v_type := p_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END;
        IF NOT EXISTS (SELECT 1 FROM whk.whk_02_eventos e WHERE e.name = v_type) THEN
            PERFORM whk.register_event_type(
                v_type, whk.capture_data_schema(p_tbl, v_op),
                description => format('Row %s in %s.%s (captured by whk.enable_capture).',
                                      CASE v_op WHEN 'INSERT' THEN 'inserted' WHEN 'UPDATE' THEN 'updated'
                                                ELSE 'deleted' END, v_nsp, v_rel),
                category => 'capture');
        END IF;
    END LOOP;

    IF v_old.tbl IS NOT NULL
       AND (v_old.event_prefix, v_old.key_column, v_old.key_columns, v_old.columns, v_old.condition, v_old.operations,
            v_old.aggregate)
           IS NOT DISTINCT FROM (p_prefix, p_key, v_keys, p_columns, p_cond, p_ops, p_agg)
       AND (SELECT ct.active FROM whk.captured_tables ct WHERE ct.tbl = p_tbl) THEN
        -- Same settings and the triggers are in place: nothing to do (enable_capture is idempotent).
        RETURN false;
    END IF;

    IF v_old.aggregate IS NOT NULL THEN
        -- Children no longer listed lose their staging triggers; back to per-row capture, the flush goes.
        PERFORM whk.capture_aggregate_uninstall(
            ARRAY(SELECT a FROM unnest(v_old.aggregate) AS a WHERE p_agg IS NULL OR NOT a = ANY (p_agg)),
            CASE WHEN p_agg IS NULL THEN v_fn END);
        -- What this transaction staged under the old settings is not flushed: it must not outlive it.
        DELETE FROM whk.capture_aggregate_pending AS p
         WHERE p.txid = pg_current_xact_id() AND p.aggregate = v_old.event_prefix;
    END IF;
    INSERT INTO whk.capture_config AS cc (tbl, event_prefix, key_column, key_columns, columns, condition,
                                          operations, function_name, aggregate)
    VALUES (p_tbl, p_prefix, p_key, v_keys, p_columns, p_cond, p_ops, v_fn, p_agg)
    ON CONFLICT (tbl) DO UPDATE
       SET event_prefix = excluded.event_prefix, key_column = excluded.key_column,
           key_columns = excluded.key_columns, columns = excluded.columns, condition = excluded.condition,
           operations = excluded.operations, aggregate = excluded.aggregate, enabled_at = now(),
           enabled_by = current_user;
    PERFORM whk.capture_install(p_tbl);
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.enable_capture(regclass, text, text, text[], text, text[], text[]) FROM PUBLIC;
COMMENT ON FUNCTION whk.enable_capture(regclass, text, text, text[], text, text[], text[]) IS
    'Capture INSERT/UPDATE/DELETE of a table as <prefix>.created|updated|deleted outbox events, per row or per aggregate (idempotent).';
-- <<< sql/functions/capture/enable_capture.sql

-- >>> sql/functions/capture/event_envelope.sql
-- whk.event_envelope: the body WHK delivers for one outbox event, the Standard Webhooks envelope
-- {"type", "timestamp", "data"}, rebuilt from what the outbox stores (migration 0013). Every reader of an
-- event's body goes through here: routing (validation, filters, ordering-key paths, the taken payload),
-- the claim, whk.emit's strict validation, the API's event history and delivery detail, whk.outbox_events.
--
-- Why the outbox does not store the envelope: it is the same for every row of a statement except the row
-- image, and building it in the ERP's transaction cost ~16-27 us per captured row (measured, PostgreSQL 15)
-- plus ~176 bytes of WAL. Capture stores only the row image(s), like the bare outbox trigger does.
--   captured rows: data = {"op", "table", "new", "old", "changed"} from operation, source_table, data (new
--                  image), old_data (old image), changed (UPDATE only; NULL -> JSON null)
--   EMIT:          data = the stored data as given to whk.emit
--   timestamp:     occurred_at (set only for events written before 0013: their statement time) else
--                  created_at, the transaction's time, in UTC as YYYY-MM-DD"T"HH24:MI:SS.US"Z"
-- Deterministic: the same stored row gives byte-identical text (jsonb's text form is canonical, every input
-- is stored), so retries and replays send the same body and signatures. A row that does not exist (the NULL
-- side of an outer join) gives NULL.
--
-- SQL-standard body (BEGIN ATOMIC): names are resolved when the function is created, so no search_path can
-- redirect them, and without a SET clause the planner inlines it into the caller's query (a function with
-- SET is never inlined; a non-inlined SQL function costs a call per row). STABLE: to_char is.
CREATE OR REPLACE FUNCTION whk.event_envelope(o whk.outbox)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN o.event_type IS NOT NULL THEN
        pg_catalog.jsonb_build_object(
            'type', o.event_type,
            'timestamp', pg_catalog.to_char(pg_catalog.timezone('UTC', coalesce(o.occurred_at, o.created_at)),
                                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'data', CASE WHEN o.operation = 'EMIT' THEN o.data
                         ELSE pg_catalog.jsonb_build_object('op', o.operation, 'table', o.source_table,
                                                            'new', o.data, 'old', o.old_data,
                                                            'changed', pg_catalog.to_jsonb(o.changed)) END)
    END;
END;
COMMENT ON FUNCTION whk.event_envelope(whk.outbox) IS
    'The delivered body of an outbox event: {"type","timestamp","data"} rebuilt from the stored row (deterministic).';
-- <<< sql/functions/capture/event_envelope.sql

-- >>> sql/functions/capture/row_change.sql
-- whk.row_change: the `data` of a captured row event, {"op", "table", "new", "old", "changed"}, for
-- bindings that emit their own event types from row changes (see sql/demo/erp.sql) so that their
-- payloads look exactly like the ones whk.enable_capture writes. changed = the keys whose values differ
-- (sorted), for UPDATE only; NULL for INSERT and DELETE.
CREATE OR REPLACE FUNCTION whk.row_change(op text, tbl text, new jsonb, old jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'op', $1, 'table', $2, 'new', $3, 'old', $4,
        'changed', CASE WHEN $1 = 'UPDATE' THEN
            to_jsonb(ARRAY(SELECT e.key FROM jsonb_each($3) AS e
                            WHERE e.value IS DISTINCT FROM $4 -> e.key ORDER BY e.key)) END);
$$;
COMMENT ON FUNCTION whk.row_change(text, text, jsonb, jsonb) IS
    'The data object of a row event: {"op","table","new","old","changed"} (changed: UPDATE only).';
-- <<< sql/functions/capture/row_change.sql

-- >>> sql/functions/capture/wake_dispatchers.sql
-- whk.wake_dispatchers: the conditional, coalesced wake-up every outbox writer performs once per statement.
-- NOTIFY only while a live dispatcher has declared itself idle (whk.dispatcher_set_idle): NOTIFY takes a
-- cluster-wide lock at commit, so doing it on every commit serialises the ERP's commits. The payload is
-- constant, so all wake-ups of one transaction fold into a single notification at commit.
-- "Idle" is read from whk.dispatcher_idle_until (kept by the trigger whk.dispatchers_idle_refresh): a
-- live dispatcher is idle and its heartbeat is less than 60 s old (the test: whk.dispatcher_is_idle).
-- No SET clause (migration 0020): every name is schema-qualified, so the caller's search_path cannot
-- redirect one, and a SET clause cost each call ~10 us (measured through whk.emit: 110 -> 100 us per call).
CREATE OR REPLACE FUNCTION whk.wake_dispatchers()
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
BEGIN
    IF whk.dispatcher_is_idle() THEN
        PERFORM pg_catalog.pg_notify('whk_outbox', '');
        RETURN true;
    END IF;
    RETURN false;
END;
$$;
COMMENT ON FUNCTION whk.wake_dispatchers() IS
    'NOTIFY whk_outbox if (and only if) a live dispatcher is idle; identical notifications fold per transaction.';
-- <<< sql/functions/capture/wake_dispatchers.sql

-- >>> sql/functions/config/breaker_config_problem.sql
-- Why circuit-breaker settings (whk_01_webhooks.breaker_config, whk_05_configuracoes 'delivery.breaker') are
-- refused, or NULL when they are fine. whk.record_outcomes reads failure_threshold as an integer and the open
-- periods as seconds it multiplies and doubles, so each has bounds: failure_threshold 1..1000,
-- open_s 0.001..86400, open_max_s 0.001..604800 (whk/breaker.py BreakerConfig has the same members and
-- bounds). Members may be left out (the global setting, then the built-in default, applies).
-- STRICT: NULL = no override.
CREATE OR REPLACE FUNCTION whk.breaker_config_problem(p_config jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    IF jsonb_typeof(p_config) <> 'object' THEN
        RETURN 'breaker settings must be a JSON object';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_config - ARRAY['failure_threshold', 'open_s', 'open_max_s']) AS k;
    IF v_unknown IS NOT NULL THEN
        RETURN format('unknown member %s (known: failure_threshold, open_s, open_max_s)', v_unknown);
    END IF;
    RETURN coalesce(
        whk.setting_number_problem('failure_threshold', p_config -> 'failure_threshold', 1, 1000, true),
        whk.setting_number_problem('open_s', p_config -> 'open_s', 0.001, 86400),
        whk.setting_number_problem('open_max_s', p_config -> 'open_max_s', 0.001, 604800));
END;
$$;
COMMENT ON FUNCTION whk.breaker_config_problem(jsonb) IS
    'Why circuit-breaker settings are out of bounds (NULL = fine); see the function''s header for the bounds.';
-- <<< sql/functions/config/breaker_config_problem.sql

-- >>> sql/functions/config/config_value_problem.sql
-- Why a global setting's value (whk_05_configuracoes) is refused, or NULL when it is fine. DBAs change these
-- with plain SQL, and the dispatcher and the API read them inside their arithmetic (token buckets, breaker
-- periods, the API's rate limit), so every numeric setting has bounds; keys WHK does not know are not
-- checked. `SELECT key, whk.config_value_problem(key, value) FROM whk.whk_05_configuracoes` lists problems.
CREATE OR REPLACE FUNCTION whk.config_value_problem(p_key text, p_value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    CASE p_key
    WHEN 'retry.policy' THEN
        RETURN whk.retry_policy_problem(p_value);
    WHEN 'delivery.breaker' THEN
        RETURN whk.breaker_config_problem(p_value);
    WHEN 'rate_limit.webhook_default' THEN
        IF jsonb_typeof(p_value) <> 'object' THEN
            RETURN 'rate_limit.webhook_default must be a JSON object';
        END IF;
        SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
        FROM jsonb_object_keys(p_value - ARRAY['per_second', 'burst', 'max_in_flight']) AS k;
        IF v_unknown IS NOT NULL THEN
            RETURN format('unknown member %s (known: per_second, burst, max_in_flight)', v_unknown);
        END IF;
        RETURN coalesce(
            whk.setting_number_problem('per_second', p_value -> 'per_second', 0.001, 1000000, false, true),
            whk.setting_number_problem('burst', p_value -> 'burst', 1, 1000000, true, true),
            whk.setting_number_problem('max_in_flight', p_value -> 'max_in_flight', 1, 1000, true, true));
    WHEN 'rate_limit.api_per_minute' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 1000000000, true);
    WHEN 'security.rotation_grace_hours' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 720);
    WHEN 'security.max_old_keys' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 100, true);
    WHEN 'delivery.auto_disable_after_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 60, 31536000);
    WHEN 'delivery.response_body_max_bytes' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 1048576, true);
    WHEN 'monitoring.oldest_pending_warn_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 604800);
    -- The development mock endpoints' table stays bounded (whk.mock_record trims by these).
    WHEN 'dev.mock_keep_per_name' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 10000, true);
    WHEN 'dev.mock_max_rows' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1000, 1000000, true);
    WHEN 'dev.mock_retention_hours' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 720);
    -- Retention (whk.retention_* functions, the worker's `retention` schedule): whole days. The audit trail
    -- keeps at least 30 days whatever a writer of this table sets, so a role that may change settings
    -- cannot make the retention job erase recent audit rows.
    WHEN 'retention.outbox_days', 'retention.delivered_days', 'retention.attempts_days' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 3650, true);
    WHEN 'retention.audit_days' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 30, 3650, true);
    ELSE
        RETURN NULL;
    END CASE;
END;
$$;
COMMENT ON FUNCTION whk.config_value_problem(text, jsonb) IS
    'Why a whk_05_configuracoes value is out of bounds (NULL = fine; unknown keys are not checked).';
-- <<< sql/functions/config/config_value_problem.sql

-- >>> sql/functions/config/create_consumer.sql
-- The SQL control plane (docs/dba.md): create a consumer (tenant) with the API's validation
-- (api/consumers/schemas.py ConsumerCreate); bad input raises invalid_parameter_value naming the parameter,
-- with a HINT, never a bare constraint error. Named notation reads best:
--   SELECT whk.create_consumer(name => 'acme', contact_email => 'ops@acme.example');
-- Returns the new id. Audited like any SQL change (whk.audit_sql_change, actor = the database role).
CREATE OR REPLACE FUNCTION whk.create_consumer(
    name                      text,
    description               text    DEFAULT NULL,
    contact_name              text    DEFAULT NULL,
    contact_email             text    DEFAULT NULL,
    status                    text    DEFAULT 'active',
    rate_limit_per_second     numeric DEFAULT NULL,
    rate_limit_burst          integer DEFAULT NULL,
    api_rate_limit_per_minute integer DEFAULT NULL,
    quota_deliveries_per_day  bigint  DEFAULT NULL,
    metadata                  jsonb   DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text;
    v_id      bigint;
BEGIN
    v_problem := CASE
        WHEN create_consumer.name IS NULL OR length(create_consumer.name) NOT BETWEEN 1 AND 200
            THEN 'name must have 1 to 200 characters'
        WHEN EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.name = create_consumer.name)
            THEN format('name %L is taken by another consumer', create_consumer.name)
        WHEN length(create_consumer.description) > 2000 THEN 'description must have at most 2000 characters'
        WHEN length(create_consumer.contact_name) > 200 THEN 'contact_name must have at most 200 characters'
        WHEN create_consumer.contact_email IS NOT NULL
             AND (length(create_consumer.contact_email) > 320 OR create_consumer.contact_email !~ '^[^@\s]+@[^@\s]+$')
            THEN 'contact_email must look like user@host (at most 320 characters)'
        WHEN create_consumer.status IS NULL OR create_consumer.status NOT IN ('active', 'suspended', 'disabled')
            THEN 'status must be active, suspended or disabled'
        WHEN create_consumer.rate_limit_per_second NOT BETWEEN 0.001 AND 1000000
            THEN 'rate_limit_per_second must be NULL (no limit) or between 0.001 and 1000000'
        WHEN create_consumer.rate_limit_burst NOT BETWEEN 1 AND 1000000
            THEN 'rate_limit_burst must be NULL or between 1 and 1000000'
        WHEN create_consumer.api_rate_limit_per_minute NOT BETWEEN 1 AND 1000000000
            THEN 'api_rate_limit_per_minute must be NULL (the global default) or between 1 and 1000000000'
        WHEN create_consumer.quota_deliveries_per_day NOT BETWEEN 1 AND 1000000000
            THEN 'quota_deliveries_per_day must be NULL (no quota) or between 1 and 1000000000'
        WHEN create_consumer.metadata IS NULL OR jsonb_typeof(create_consumer.metadata) <> 'object'
            THEN 'metadata must be a JSON object'
    END;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.create_consumer: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The parameters and their bounds: docs/dba.md, "SQL control plane" (the same as '
                         'POST /api/whk/consumers). Existing consumers: SELECT id, name FROM whk.whk_04_assinantes.';
    END IF;
    INSERT INTO whk.whk_04_assinantes AS a (name, description, contact_name, contact_email, status,
                                           rate_limit_per_second, rate_limit_burst, api_rate_limit_per_minute,
                                           quota_deliveries_per_day, metadata)
    VALUES (create_consumer.name, create_consumer.description, create_consumer.contact_name,
            create_consumer.contact_email, create_consumer.status, create_consumer.rate_limit_per_second,
            create_consumer.rate_limit_burst, create_consumer.api_rate_limit_per_minute,
            create_consumer.quota_deliveries_per_day, create_consumer.metadata)
    RETURNING a.id INTO v_id;
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.create_consumer(text, text, text, text, text, numeric, integer, integer, bigint, jsonb) IS
    'SQL control plane: create a consumer with the API''s validation (bad input raises with a HINT); returns its id.';
-- <<< sql/functions/config/create_consumer.sql

-- >>> sql/functions/config/create_webhook.sql
-- The SQL control plane (docs/dba.md): register a webhook with the API's validation (api/webhooks/schemas.py
-- WebhookCreate and the controller's checks); bad input raises invalid_parameter_value naming the
-- parameter, with a HINT, never a bare constraint error. Named notation reads best:
--   SELECT whk.create_webhook(consumer_id => 1, name => 'orders', url => 'https://erp.example/hooks',
--                             event_types => '{order.*}');
-- Returns the new id. Never unsigned: the signing secret is encrypted with the application's key, which the
-- database does not have, so the webhook starts waiting for it (needs_secret_since); the job worker
-- provisions one within seconds, and its deliveries wait meanwhile (`whk webhooks secret ID` shows it to
-- hand to the receiver). For the same reason outbound credentials (auth_type other than none) are set
-- through the API. Which URLs the SSRF policy allows is the dispatcher's to decide (WHK_ALLOW_PRIVATE_CIDRS):
-- a refused URL quarantines the webhook (stage ssrf) at its first attempt.
-- Audited like any SQL change (whk.audit_sql_change, actor = the database role).
CREATE OR REPLACE FUNCTION whk.create_webhook(
    consumer_id           bigint,
    name                  text,
    url                   text,
    event_types           text[],
    description           text    DEFAULT NULL,
    http_method           text    DEFAULT 'POST',
    filter                text    DEFAULT NULL,
    payload_version       integer DEFAULT NULL,
    headers               jsonb   DEFAULT '{}',
    status                text    DEFAULT 'active',
    delivery_mode         text    DEFAULT 'immediate',
    batch_size            integer DEFAULT 100,
    batch_window_ms       integer DEFAULT 1000,
    delay_seconds         integer DEFAULT 0,
    ordering_key_path     text    DEFAULT NULL,
    retry_policy          jsonb   DEFAULT NULL,
    timeout_ms            integer DEFAULT 15000,
    rate_limit_per_second numeric DEFAULT NULL,
    rate_limit_burst      integer DEFAULT NULL,
    max_in_flight         integer DEFAULT 10,
    require_ack           boolean DEFAULT false,
    ack_timeout_seconds   integer DEFAULT 3600,
    breaker_config        jsonb   DEFAULT NULL,
    metadata              jsonb   DEFAULT '{}',
    supersede_by_key      boolean DEFAULT false,
    urgent                boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_pattern CONSTANT text := '^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$';
    v_reserved CONSTANT text[] := ARRAY['host', 'content-length', 'content-type', 'transfer-encoding', 'connection',
                                        'user-agent', 'webhook-id', 'webhook-timestamp', 'webhook-signature'];
    v_problem text;
    v_id      bigint;
    v_path    jsonpath;
BEGIN
    v_problem := CASE
        WHEN create_webhook.consumer_id IS NULL
             OR NOT EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.id = create_webhook.consumer_id)
            THEN format('consumer_id %s is not a consumer (SELECT id, name FROM whk.whk_04_assinantes)',
                        coalesce(create_webhook.consumer_id::text, 'NULL'))
        WHEN create_webhook.name IS NULL OR length(create_webhook.name) NOT BETWEEN 1 AND 200
            THEN 'name must have 1 to 200 characters'
        WHEN create_webhook.url IS NULL OR create_webhook.url !~ '^(https?|rediss?|amqps?)://' OR length(create_webhook.url) NOT BETWEEN 8 AND 2048
            THEN 'url must be an http(s)://, redis(s):// or amqp(s):// URL of at most 2048 characters'
        WHEN create_webhook.url ~ '^(rediss?|amqps?)://[^/?#]*@'
            THEN 'a broker URL carries no login: pass it as auth_type basic with the credential user:password (stored encrypted)'
        WHEN cardinality(create_webhook.event_types) IS NULL OR cardinality(create_webhook.event_types) NOT BETWEEN 1 AND 100
            THEN 'event_types must list 1 to 100 types or patterns, e.g. ''{order.created,invoice.*}'''
        WHEN EXISTS (SELECT 1 FROM unnest(create_webhook.event_types) t
                     WHERE t IS NULL OR length(t) > 200 OR t !~ v_pattern)
            THEN format('event_types: %s is neither a type (order.created), a prefix (order.*) nor *',
                        (SELECT coalesce(quote_literal(t), 'NULL') FROM unnest(create_webhook.event_types) t
                         WHERE t IS NULL OR length(t) > 200 OR t !~ v_pattern LIMIT 1))
        WHEN length(create_webhook.description) > 2000 THEN 'description must have at most 2000 characters'
        WHEN create_webhook.http_method IS NULL OR create_webhook.http_method NOT IN ('POST', 'PUT', 'PATCH')
            THEN 'http_method must be POST, PUT or PATCH'
        WHEN length(create_webhook.filter) NOT BETWEEN 1 AND 2000 THEN 'filter must have 1 to 2000 characters'
        WHEN length(create_webhook.ordering_key_path) NOT BETWEEN 1 AND 2000
            THEN 'ordering_key_path must have 1 to 2000 characters'
        WHEN create_webhook.payload_version NOT BETWEEN 1 AND 1000
            THEN 'payload_version must be NULL (any) or between 1 and 1000'
        WHEN create_webhook.headers IS NULL OR jsonb_typeof(create_webhook.headers) <> 'object'
            THEN 'headers must be a JSON object of name: value strings'
        WHEN (SELECT count(*) FROM jsonb_object_keys(create_webhook.headers)) > 50 THEN 'headers: at most 50'
        WHEN EXISTS (SELECT 1 FROM jsonb_each(create_webhook.headers) h
                     WHERE h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,100}$' OR lower(h.key) = ANY (v_reserved)
                        OR jsonb_typeof(h.value) <> 'string' OR length(h.value #>> '{}') > 2000
                        OR (h.value #>> '{}') ~ '[\r\n]')
            THEN 'headers: names are HTTP tokens (not one WHK sets itself: webhook-*, content-type, host, ...), '
                 'values strings of at most 2000 characters without CR or LF'
        WHEN create_webhook.status IS NULL OR create_webhook.status NOT IN ('active', 'paused')
            THEN 'status must be active or paused'
        WHEN create_webhook.delivery_mode IS NULL
             OR create_webhook.delivery_mode NOT IN ('immediate', 'batch', 'delayed', 'ordered')
            THEN 'delivery_mode must be immediate, batch, delayed or ordered'
        WHEN create_webhook.batch_size IS NULL OR create_webhook.batch_size NOT BETWEEN 1 AND 1000
            THEN 'batch_size must be between 1 and 1000'
        WHEN create_webhook.batch_window_ms IS NULL OR create_webhook.batch_window_ms NOT BETWEEN 0 AND 3600000
            THEN 'batch_window_ms must be between 0 and 3600000'
        WHEN create_webhook.delay_seconds IS NULL OR create_webhook.delay_seconds NOT BETWEEN 0 AND 2592000
            THEN 'delay_seconds must be between 0 and 2592000 (30 days)'
        WHEN create_webhook.timeout_ms IS NULL OR create_webhook.timeout_ms NOT BETWEEN 100 AND 120000
            THEN 'timeout_ms must be between 100 and 120000'
        WHEN create_webhook.rate_limit_per_second NOT BETWEEN 0.001 AND 1000000
            THEN 'rate_limit_per_second must be NULL (no limit) or between 0.001 and 1000000'
        WHEN create_webhook.rate_limit_burst NOT BETWEEN 1 AND 1000000
            THEN 'rate_limit_burst must be NULL or between 1 and 1000000'
        WHEN create_webhook.max_in_flight IS NULL OR create_webhook.max_in_flight NOT BETWEEN 1 AND 1000
            THEN 'max_in_flight must be between 1 and 1000'
        WHEN create_webhook.require_ack IS NULL THEN 'require_ack must be true or false'
        WHEN create_webhook.ack_timeout_seconds IS NULL OR create_webhook.ack_timeout_seconds NOT BETWEEN 1 AND 2592000
            THEN 'ack_timeout_seconds must be between 1 and 2592000'
        WHEN whk.retry_policy_problem(create_webhook.retry_policy) IS NOT NULL
            THEN 'retry_policy: ' || whk.retry_policy_problem(create_webhook.retry_policy)
        WHEN whk.breaker_config_problem(create_webhook.breaker_config) IS NOT NULL
            THEN 'breaker_config: ' || whk.breaker_config_problem(create_webhook.breaker_config)
        WHEN create_webhook.metadata IS NULL OR jsonb_typeof(create_webhook.metadata) <> 'object'
            THEN 'metadata must be a JSON object'
        WHEN create_webhook.supersede_by_key IS NULL OR create_webhook.urgent IS NULL
            THEN 'supersede_by_key and urgent must be true or false'
        WHEN create_webhook.supersede_by_key AND create_webhook.delivery_mode <> 'delayed'
            THEN 'supersede_by_key needs delivery_mode delayed'
    END;
    IF v_problem IS NULL THEN
        BEGIN
            v_path := create_webhook.filter::jsonpath;
            v_path := create_webhook.ordering_key_path::jsonpath;
        EXCEPTION WHEN syntax_error OR invalid_text_representation OR invalid_parameter_value THEN
            v_problem := format('%s is not a SQL/JSON path: %s',
                                CASE WHEN v_path IS NULL AND create_webhook.filter IS NOT NULL
                                     THEN 'filter' ELSE 'ordering_key_path' END, SQLERRM);
        END;
    END IF;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.create_webhook: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The parameters and their bounds: docs/dba.md, "SQL control plane" (the same as '
                         'POST /api/whk/webhooks).';
    END IF;
    INSERT INTO whk.whk_01_webhooks AS w (consumer_id, name, description, url, http_method, event_types, filter,
                                         payload_version, headers, status, delivery_mode, batch_size,
                                         batch_window_ms, delay_seconds, ordering_key_path, retry_policy,
                                         timeout_ms, rate_limit_per_second, rate_limit_burst, max_in_flight,
                                         require_ack, ack_timeout_seconds, breaker_config, metadata,
                                         supersede_by_key, urgent)
    VALUES (create_webhook.consumer_id, create_webhook.name, create_webhook.description, create_webhook.url,
            create_webhook.http_method, create_webhook.event_types, create_webhook.filter::jsonpath,
            create_webhook.payload_version, create_webhook.headers, create_webhook.status,
            create_webhook.delivery_mode, create_webhook.batch_size, create_webhook.batch_window_ms,
            create_webhook.delay_seconds, create_webhook.ordering_key_path::jsonpath, create_webhook.retry_policy,
            create_webhook.timeout_ms, create_webhook.rate_limit_per_second, create_webhook.rate_limit_burst,
            create_webhook.max_in_flight, create_webhook.require_ack, create_webhook.ack_timeout_seconds,
            create_webhook.breaker_config, create_webhook.metadata, create_webhook.supersede_by_key,
            create_webhook.urgent)
    RETURNING w.id INTO v_id;
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.create_webhook(bigint, text, text, text[], text, text, text, integer, jsonb, text, text, integer,
                                       integer, integer, text, jsonb, integer, numeric, integer, integer, boolean,
                                       integer, jsonb, jsonb, boolean, boolean) IS
    'SQL control plane: register a webhook with the API''s validation (bad input raises with a HINT); returns its '
    'id. Its signing secret is provisioned by the job worker (never sent unsigned meanwhile).';
-- <<< sql/functions/config/create_webhook.sql

-- >>> sql/functions/config/quiet_hours_problem.sql
-- Why a consumer's quiet hours (whk_04_assinantes.quiet_hours) are refused, or NULL when they are fine
-- (NULL quiet hours: none). The answer starts with the JSON pointer of the offending member inside
-- quiet_hours ('/time_zone: …', '/windows/0/start: …'), so the API names the field and the SQL interface
-- (whk.set_consumer_quiet_hours) quotes it. The same bounds as the API (api/consumers/schemas.py QuietHours).
--
-- The shape: {"time_zone": "Europe/Lisbon", "windows": [{"days": ["mon", "tue"], "start": "22:00",
-- "end": "07:00"}]}: 1 to 14 windows, each on 1 to 7 distinct days, start and end HH:MM and different (an end
-- at or before the start is on the next day).
--
-- The time zone must be an IANA name (Area/Location, or UTC) that this database's time zone data knows.
-- Abbreviations (CEST) and POSIX offsets (UTC+3) are refused: they do not follow daylight saving time. The
-- lookup is pg_catalog.timezone() on the name, not a scan of pg_timezone_names (that reads every zone file,
-- milliseconds), because this runs as a CHECK on every write of the consumer row.
CREATE OR REPLACE FUNCTION whk.quiet_hours_problem(p_quiet jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_tz   text;
    v_win  jsonb;
    v_i    integer := 0;
    v_days jsonb;
BEGIN
    IF p_quiet IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_quiet) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_object_keys(p_quiet - 'time_zone' - 'windows')) THEN
        RETURN ': must be an object with exactly time_zone and windows';
    END IF;
    v_tz := p_quiet ->> 'time_zone';
    IF jsonb_typeof(p_quiet -> 'time_zone') IS DISTINCT FROM 'string' OR length(v_tz) > 64
       OR v_tz !~ '^(UTC|[A-Za-z][A-Za-z_-]*(/[A-Za-z0-9_+-]+){1,2})$' THEN
        RETURN '/time_zone: must be an IANA time zone name such as Europe/Lisbon or UTC';
    END IF;
    BEGIN
        PERFORM pg_catalog.timezone(v_tz, timestamptz '2000-01-01 00:00+00');
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN format('/time_zone: %s is not a time zone this database knows (see pg_timezone_names)', v_tz);
    END;
    IF jsonb_typeof(p_quiet -> 'windows') IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_quiet -> 'windows') NOT BETWEEN 1 AND 14 THEN
        RETURN '/windows: must be a list of 1 to 14 windows';
    END IF;
    FOR v_win IN SELECT e FROM jsonb_array_elements(p_quiet -> 'windows') AS e LOOP
        IF jsonb_typeof(v_win) <> 'object' OR NOT v_win ?& ARRAY['days', 'start', 'end']
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(v_win - 'days' - 'start' - 'end')) THEN
            RETURN format('/windows/%s: must be an object with exactly days, start and end', v_i);
        END IF;
        v_days := v_win -> 'days';
        IF jsonb_typeof(v_days) <> 'array' OR jsonb_array_length(v_days) NOT BETWEEN 1 AND 7
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_days) d
                      WHERE d NOT IN ('"mon"', '"tue"', '"wed"', '"thu"', '"fri"', '"sat"', '"sun"'))
           OR (SELECT count(DISTINCT d) FROM jsonb_array_elements(v_days) d) <> jsonb_array_length(v_days) THEN
            RETURN format('/windows/%s/days: must be 1 to 7 distinct days among mon, tue, wed, thu, fri, sat, sun', v_i);
        END IF;
        IF jsonb_typeof(v_win -> 'start') <> 'string' OR v_win ->> 'start' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RETURN format('/windows/%s/start: must be a time HH:MM between 00:00 and 23:59', v_i);
        END IF;
        IF jsonb_typeof(v_win -> 'end') <> 'string' OR v_win ->> 'end' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RETURN format('/windows/%s/end: must be a time HH:MM between 00:00 and 23:59', v_i);
        END IF;
        IF v_win ->> 'start' = v_win ->> 'end' THEN
            RETURN format('/windows/%s/end: must differ from start (an end before the start is on the next day)', v_i);
        END IF;
        v_i := v_i + 1;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.quiet_hours_problem(jsonb) IS
    'Why quiet hours are refused (JSON pointer: message), or NULL when they are fine.';
-- <<< sql/functions/config/quiet_hours_problem.sql

-- >>> sql/functions/config/retry_policy_problem.sql
-- Why a retry policy (whk_01_webhooks.retry_policy, whk_05_configuracoes 'retry.policy') is refused, or NULL
-- when it is fine. The bounds are the API's (api/webhooks/schemas.py RetryPolicy) and the dispatcher's
-- (dispatcher/retry.py), so a policy written with plain SQL is held to what the API would accept; members
-- may be left out (whk.effective_retry_policy lays a partial policy over the global one). STRICT: NULL = no
-- override.
CREATE OR REPLACE FUNCTION whk.retry_policy_problem(p_policy jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    IF jsonb_typeof(p_policy) <> 'object' THEN
        RETURN 'a retry policy must be a JSON object';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_policy - ARRAY['schedule_s', 'jitter', 'throttle_floor_s', 'retry_after_cap_factor',
                                            'retry_blocked']) AS k;
    IF v_unknown IS NOT NULL THEN
        RETURN format('unknown member %s (known: schedule_s, jitter, throttle_floor_s, retry_after_cap_factor, '
                      'retry_blocked)', v_unknown);
    END IF;
    IF p_policy ? 'schedule_s'
       AND (jsonb_typeof(p_policy -> 'schedule_s') <> 'array' OR jsonb_array_length(p_policy -> 'schedule_s') > 30) THEN
        RETURN 'schedule_s must be a list of at most 30 delays in seconds';
    END IF;
    RETURN coalesce(
        (SELECT s.problem
         FROM (SELECT whk.setting_number_problem(format('schedule_s[%s]', e.i - 1), e.v, 0.001, 604800) AS problem, e.i
               FROM jsonb_array_elements(p_policy -> 'schedule_s') WITH ORDINALITY AS e (v, i)) s
         WHERE s.problem IS NOT NULL
         ORDER BY s.i LIMIT 1),
        whk.setting_number_problem('jitter', p_policy -> 'jitter', 0, 0.99),
        whk.setting_number_problem('throttle_floor_s', p_policy -> 'throttle_floor_s', 0, 86400),
        whk.setting_number_problem('retry_after_cap_factor', p_policy -> 'retry_after_cap_factor', 1, 100),
        CASE WHEN jsonb_typeof(p_policy -> 'retry_blocked') <> 'boolean' THEN 'retry_blocked must be a boolean' END);
END;
$$;
COMMENT ON FUNCTION whk.retry_policy_problem(jsonb) IS
    'Why a retry policy is out of bounds (NULL = fine): schedule_s <= 30 delays of 0.001..604800 s, jitter 0..0.99, ...';
-- <<< sql/functions/config/retry_policy_problem.sql

-- >>> sql/functions/config/set_consumer_quiet_hours.sql
-- The SQL control plane (docs/dba.md): set or clear (NULL) a consumer's quiet hours, with the API's validation
-- (PUT /api/whk/consumers/{id} "quiet_hours"); bad input raises invalid_parameter_value naming the member,
-- with a HINT, never a bare constraint error:
--   SELECT whk.set_consumer_quiet_hours(7, '{"time_zone": "Europe/Lisbon",
--          "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "07:00"}]}');
-- Returns whether the consumer exists. Audited like any SQL change (whk.audit_sql_change, actor = the role).
CREATE OR REPLACE FUNCTION whk.set_consumer_quiet_hours(p_consumer_id bigint, p_quiet_hours jsonb)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text := whk.quiet_hours_problem(p_quiet_hours);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.set_consumer_quiet_hours: quiet_hours%', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'quiet_hours is NULL (none) or {"time_zone": "<IANA name>", "windows": [{"days": '
                         '["mon", …], "start": "HH:MM", "end": "HH:MM"}]} with 1 to 14 windows: docs/delivery.md, '
                         '"Quiet hours". Known zones: SELECT name FROM pg_timezone_names.';
    END IF;
    UPDATE whk.whk_04_assinantes a
    SET quiet_hours = p_quiet_hours, updated_at = clock_timestamp()
    WHERE a.id = p_consumer_id;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION whk.set_consumer_quiet_hours(bigint, jsonb) IS
    'SQL control plane: set or clear a consumer''s quiet hours with the API''s validation (bad input raises with a HINT).';
-- <<< sql/functions/config/set_consumer_quiet_hours.sql

-- >>> sql/functions/config/setting_number_problem.sql
-- Why one number of a JSON setting is out of its bounds, or NULL when it is fine (an absent member is fine).
-- The CHECKs on JSON settings (retry policies, breaker settings, global settings, alert conditions) are built
-- from it: the dispatcher's claim and outcome statements cast these members (::integer, ::double precision)
-- inside their arithmetic, so a string, a fraction where an integer is read, or a value outside its bounds
-- (a denormal rate underflows, a huge one overflows) must never reach a row. Integers must be written as
-- integers (5, not 5.0): `(x ->> 'k')::integer` refuses '5.0'.
CREATE OR REPLACE FUNCTION whk.setting_number_problem(p_name text, p_value jsonb, p_min numeric, p_max numeric,
                                                      p_integer boolean DEFAULT false,
                                                      p_nullable boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    IF p_value IS NULL OR (p_nullable AND jsonb_typeof(p_value) = 'null') THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_value) <> 'number' OR (p_integer AND p_value::text !~ '^-?[0-9]+$') THEN
        RETURN format('%s must be %s%s', p_name, CASE WHEN p_integer THEN 'an integer' ELSE 'a number' END,
                      CASE WHEN p_nullable THEN ' or null' ELSE '' END);
    END IF;
    IF p_value::numeric < p_min OR p_value::numeric > p_max THEN
        RETURN format('%s must be between %s and %s, got %s', p_name, p_min, p_max, left(p_value::text, 40));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.setting_number_problem(text, jsonb, numeric, numeric, boolean, boolean) IS
    'Why a JSON setting''s number is out of bounds (NULL = fine); the building block of the JSON setting CHECKs.';
-- <<< sql/functions/config/setting_number_problem.sql

-- >>> sql/functions/contracts/event_transform_path.sql
-- whk.event_transform_path: the functions that render an event type's data from one major to another,
-- in the order to apply them: the SHORTEST chain of registered transforms (whk_02_eventos_transforms),
-- e.g. 3 -> 2 -> 1 when only 3->2 and 2->1 exist; among equally short chains, the one through the lowest
-- majors. '{}' when the majors are equal; NULL when no chain exists (the caller parks the delivery).
-- A major is never visited twice, so the walk ends however the transforms are registered.
CREATE OR REPLACE FUNCTION whk.event_transform_path(p_event_type text, p_from_major integer, p_to_major integer)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    WITH RECURSIVE walk (major, path, seen) AS (
        SELECT p_from_major, ARRAY[]::text[], ARRAY[p_from_major]
        UNION ALL
        SELECT t.to_major, w.path || t.function, w.seen || t.to_major
        FROM walk w
        JOIN whk.whk_02_eventos e ON e.name = p_event_type
        JOIN whk.whk_02_eventos_transforms t ON t.event_type_id = e.id AND t.from_major = w.major
        WHERE w.major <> p_to_major AND t.to_major <> ALL (w.seen)
    )
    SELECT w.path FROM walk w
    WHERE w.major = p_to_major
    ORDER BY cardinality(w.path), w.seen
    LIMIT 1
$$;
COMMENT ON FUNCTION whk.event_transform_path(text, integer, integer) IS
    'Shortest chain of registered transforms from one major of an event type to another ({} = same; NULL = none).';
-- <<< sql/functions/contracts/event_transform_path.sql

-- >>> sql/functions/contracts/jsonschema_breaking_change.sql
-- whk.jsonschema_breaking_change: would replacing schema p_old by p_new break anyone within one major?
-- Returns NULL when the change is backward compatible (it may become a new minor version), else the
-- first breaking difference as '<pointer into the schema>: <why>'.
--
-- Compatible ("additive") changes: new optional properties (unless the old schema closed the object with
-- additionalProperties: false), new enum values, removed or looser bounds/enum/const/pattern, annotation
-- edits (title, description, examples, default, ...).
-- Breaking changes: a property removed or changed incompatibly; `required` gaining or losing a name (old
-- events or old consumers would no longer agree with it); `type` changing at all; an enum losing a value;
-- a const, enum or pattern appearing or changing; a bound appearing or tightening; additionalProperties
-- becoming stricter; any change inside allOf/anyOf/oneOf/not/if/then/else/$ref, which this check cannot
-- prove compatible (publish a new major for those).
CREATE OR REPLACE FUNCTION whk.jsonschema_breaking_change(p_old jsonb, p_new jsonb, p_path text DEFAULT '')
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_where text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_old   jsonb := CASE WHEN p_old = 'true'::jsonb THEN '{}'::jsonb ELSE p_old END;
    v_new   jsonb := CASE WHEN p_new = 'true'::jsonb THEN '{}'::jsonb ELSE p_new END;
    v_key   text;
    v_o     jsonb;
    v_n     jsonb;
    v_err   text;
    v_names text;
    c_annotations CONSTANT text[] := ARRAY['$schema', '$id', '$comment', '$anchor', 'title', 'description',
        'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'x-whk'];
    c_lower CONSTANT text[] := ARRAY['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'];
    c_upper CONSTANT text[] := ARRAY['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'];
BEGIN
    IF v_old IS NOT DISTINCT FROM v_new THEN
        RETURN NULL;
    END IF;
    IF v_new = '{}'::jsonb THEN
        RETURN NULL;  -- anything goes now: looser never breaks old events
    END IF;
    IF jsonb_typeof(v_old) <> 'object' OR jsonb_typeof(v_new) <> 'object' THEN
        RETURN format('%s: the schema changed from %s to %s', v_where, left(p_old::text, 80), left(p_new::text, 80));
    END IF;

    FOR v_key IN SELECT k FROM jsonb_object_keys(v_old) AS k UNION SELECT k FROM jsonb_object_keys(v_new) AS k LOOP
        v_o := v_old -> v_key;
        v_n := v_new -> v_key;
        CONTINUE WHEN v_o IS NOT DISTINCT FROM v_n OR v_key = ANY (c_annotations);

        IF v_key = 'type' THEN
            IF v_o IS NULL
               OR v_n IS NULL
               OR ARRAY(SELECT t FROM jsonb_array_elements_text(
                            CASE jsonb_typeof(v_o) WHEN 'array' THEN v_o ELSE jsonb_build_array(v_o) END) AS t ORDER BY t)
                  <> ARRAY(SELECT t FROM jsonb_array_elements_text(
                            CASE jsonb_typeof(v_n) WHEN 'array' THEN v_n ELSE jsonb_build_array(v_n) END) AS t ORDER BY t)
            THEN
                IF v_n IS NULL THEN
                    CONTINUE;  -- no type constraint any more: looser
                END IF;
                RETURN format('%s/type: changed from %s to %s', p_path, coalesce(v_o::text, 'any'), v_n::text);
            END IF;
        ELSIF v_key = 'required' THEN
            SELECT string_agg(format('"%s"', r), ', ') INTO v_names
              FROM (SELECT jsonb_array_elements_text(coalesce(v_n, '[]')) EXCEPT
                    SELECT jsonb_array_elements_text(coalesce(v_o, '[]'))) AS added(r);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/required: %s became required (events already emitted may lack it)', p_path, v_names);
            END IF;
            SELECT string_agg(format('"%s"', r), ', ') INTO v_names
              FROM (SELECT jsonb_array_elements_text(coalesce(v_o, '[]')) EXCEPT
                    SELECT jsonb_array_elements_text(coalesce(v_n, '[]'))) AS removed(r);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/required: %s is no longer required (consumers rely on it)', p_path, v_names);
            END IF;
        ELSIF v_key = 'properties' THEN
            FOR v_names, v_o IN SELECT e.key, e.value FROM jsonb_each(coalesce(v_old -> 'properties', '{}')) AS e LOOP
                IF NOT coalesce(v_new -> 'properties' ? v_names, false) THEN
                    RETURN format('%s/properties/%s: property removed', p_path, v_names);
                END IF;
                v_err := whk.jsonschema_breaking_change(
                    v_o, v_new -> 'properties' -> v_names,
                    p_path || '/properties/' || replace(replace(v_names, '~', '~0'), '/', '~1'));
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
            IF v_old -> 'additionalProperties' = 'false'::jsonb THEN
                SELECT string_agg(format('"%s"', k), ', ') INTO v_names
                  FROM jsonb_object_keys(coalesce(v_new -> 'properties', '{}')) AS k
                 WHERE NOT coalesce(v_old -> 'properties' ? k, false);
                IF v_names IS NOT NULL THEN
                    RETURN format('%s/properties: %s added to an object that had additionalProperties: false',
                                  p_path, v_names);
                END IF;
            END IF;
        ELSIF v_key = 'additionalProperties' THEN
            IF v_n = 'false'::jsonb THEN
                RETURN format('%s/additionalProperties: became false', p_path);
            ELSIF v_n IS NOT NULL AND v_n <> 'true'::jsonb THEN
                v_err := whk.jsonschema_breaking_change(coalesce(v_o, '{}'), v_n, p_path || '/additionalProperties');
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END IF;
        ELSIF v_key = 'enum' THEN
            IF v_n IS NULL THEN
                CONTINUE;  -- any value now: looser
            END IF;
            IF v_o IS NULL THEN
                RETURN format('%s/enum: added (values allowed before are now refused)', p_path);
            END IF;
            SELECT string_agg(e.value::text, ', ') INTO v_names
              FROM jsonb_array_elements(v_o) AS e
             WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_n) AS f WHERE f.value = e.value);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/enum: %s removed', p_path, v_names);
            END IF;
        ELSIF v_key IN ('const', 'pattern', 'multipleOf') THEN
            IF v_n IS NOT NULL THEN
                RETURN format('%s/%s: %s', p_path, v_key, CASE WHEN v_o IS NULL THEN 'added' ELSE 'changed' END);
            END IF;
        ELSIF v_key = ANY (c_lower) THEN
            IF v_n IS NOT NULL AND (v_o IS NULL OR v_n::numeric > v_o::numeric) THEN
                RETURN format('%s/%s: tightened from %s to %s', p_path, v_key, coalesce(v_o::text, 'none'), v_n::text);
            END IF;
        ELSIF v_key = ANY (c_upper) THEN
            IF v_n IS NOT NULL AND (v_o IS NULL OR v_n::numeric < v_o::numeric) THEN
                RETURN format('%s/%s: tightened from %s to %s', p_path, v_key, coalesce(v_o::text, 'none'), v_n::text);
            END IF;
        ELSIF v_key = 'uniqueItems' THEN
            IF v_n = 'true'::jsonb THEN
                RETURN format('%s/uniqueItems: added', p_path);
            END IF;
        ELSIF v_key = 'items' THEN
            IF v_n IS NOT NULL THEN
                v_err := whk.jsonschema_breaking_change(coalesce(v_o, '{}'), v_n, p_path || '/items');
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END IF;
        ELSIF v_key IN ('$defs', 'definitions') THEN
            FOR v_names, v_o IN SELECT e.key, e.value FROM jsonb_each(coalesce(v_old -> v_key, '{}')) AS e LOOP
                IF NOT coalesce(v_new -> v_key ? v_names, false) THEN
                    RETURN format('%s/%s/%s: definition removed', p_path, v_key, v_names);
                END IF;
                v_err := whk.jsonschema_breaking_change(v_o, v_new -> v_key -> v_names,
                                                        p_path || '/' || v_key || '/' || v_names);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key = 'format' THEN
            IF v_n IS NOT NULL THEN
                RETURN format('%s/format: %s', p_path, CASE WHEN v_o IS NULL THEN 'added' ELSE 'changed' END);
            END IF;
        ELSE
            -- allOf/anyOf/oneOf/not/if/then/else/$ref/prefixItems: compatibility cannot be proven here.
            RETURN format('%s/%s: changed (compatibility of %s cannot be checked: publish a new major)',
                          p_path, v_key, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_breaking_change(jsonb, jsonb, text) IS
    'NULL when a new schema is backward compatible with the old one (minor bump), else the first breaking change.';
-- <<< sql/functions/contracts/jsonschema_breaking_change.sql

-- >>> sql/functions/contracts/jsonschema_error.sql
-- whk.jsonschema_error: validate a JSON value against a JSON Schema (draft 2020-12 subset) in SQL.
-- Returns NULL when valid, else the first error as '<JSON pointer>: <what is wrong>'.
-- Why in PL/pgSQL: strict event types are validated inside the emitting transaction, with no round trip.
-- Supported assertions (anything else is refused at registration by whk.jsonschema_problem, so no rule
-- is ever silently ignored): type, enum, const, required, properties, additionalProperties,
-- minProperties, maxProperties, items, prefixItems, minItems, maxItems, uniqueItems, minimum, maximum,
-- exclusiveMinimum, exclusiveMaximum, multipleOf, minLength, maxLength, pattern (PostgreSQL regular
-- expressions), allOf, anyOf, oneOf, not, if/then/else, local $ref ('#', '#/$defs/...').
-- Annotations (title, description, default, examples, format, ...) do not assert anything.
CREATE OR REPLACE FUNCTION whk.jsonschema_error(
    p_schema   jsonb,
    p_instance jsonb,
    p_path     text DEFAULT '',
    p_root     jsonb DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_root  jsonb := coalesce(p_root, p_schema);
    v_where text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_inst  jsonb := coalesce(p_instance, 'null'::jsonb);  -- SQL NULL is validated as JSON null
    v_kind  text;
    v_types text[];
    v_err   text;
    v_key   text;
    v_sub   jsonb;
    v_num   numeric;
    v_str   text;
    v_i     bigint;
    v_n     integer;
BEGIN
    IF p_schema IS NULL OR p_schema = 'true'::jsonb THEN
        RETURN NULL;
    END IF;
    IF p_schema = 'false'::jsonb THEN
        RETURN v_where || ': no value is allowed here';
    END IF;
    IF jsonb_typeof(p_schema) <> 'object' THEN
        RETURN NULL;
    END IF;
    v_kind := jsonb_typeof(v_inst);

    IF p_schema ? '$ref' THEN
        v_str := p_schema ->> '$ref';
        IF v_str = '#' THEN
            v_sub := v_root;
        ELSIF v_str LIKE '#/%' THEN
            v_sub := v_root #> ARRAY(SELECT replace(replace(s, '~1', '/'), '~0', '~')
                                     FROM unnest(string_to_array(substr(v_str, 3), '/')) AS s);
        END IF;
        IF v_sub IS NULL THEN
            RETURN format('%s: unresolvable $ref %s', v_where, v_str);
        END IF;
        v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
        IF v_err IS NOT NULL THEN
            RETURN v_err;
        END IF;
    END IF;

    IF p_schema ? 'type' THEN
        v_types := CASE jsonb_typeof(p_schema -> 'type')
                       WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(p_schema -> 'type'))
                       ELSE ARRAY[p_schema ->> 'type'] END;
        IF NOT (v_kind = ANY (v_types)
                OR (v_kind = 'number' AND 'integer' = ANY (v_types) AND v_inst::numeric % 1 = 0)) THEN
            RETURN format('%s: expected %s, got %s', v_where, array_to_string(v_types, ' or '), v_kind);
        END IF;
    END IF;

    IF p_schema ? 'const' AND v_inst IS DISTINCT FROM p_schema -> 'const' THEN
        RETURN format('%s: must be %s', v_where, left((p_schema -> 'const')::text, 200));
    END IF;

    IF p_schema ? 'enum' AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_schema -> 'enum') AS e
                                          WHERE e.value = v_inst) THEN
        RETURN format('%s: %s is not one of %s', v_where, left(v_inst::text, 100),
                      left((p_schema -> 'enum')::text, 200));
    END IF;

    IF v_kind = 'number' THEN
        v_num := v_inst::numeric;
        IF p_schema ? 'minimum' AND v_num < (p_schema ->> 'minimum')::numeric THEN
            RETURN format('%s: %s is less than the minimum %s', v_where, v_num, p_schema ->> 'minimum');
        END IF;
        IF p_schema ? 'exclusiveMinimum' AND v_num <= (p_schema ->> 'exclusiveMinimum')::numeric THEN
            RETURN format('%s: %s must be greater than %s', v_where, v_num, p_schema ->> 'exclusiveMinimum');
        END IF;
        IF p_schema ? 'maximum' AND v_num > (p_schema ->> 'maximum')::numeric THEN
            RETURN format('%s: %s is greater than the maximum %s', v_where, v_num, p_schema ->> 'maximum');
        END IF;
        IF p_schema ? 'exclusiveMaximum' AND v_num >= (p_schema ->> 'exclusiveMaximum')::numeric THEN
            RETURN format('%s: %s must be less than %s', v_where, v_num, p_schema ->> 'exclusiveMaximum');
        END IF;
        IF p_schema ? 'multipleOf' AND v_num % (p_schema ->> 'multipleOf')::numeric <> 0 THEN
            RETURN format('%s: %s is not a multiple of %s', v_where, v_num, p_schema ->> 'multipleOf');
        END IF;
    ELSIF v_kind = 'string' THEN
        v_str := v_inst #>> '{}';
        IF p_schema ? 'minLength' AND char_length(v_str) < (p_schema ->> 'minLength')::integer THEN
            RETURN format('%s: shorter than %s characters', v_where, p_schema ->> 'minLength');
        END IF;
        IF p_schema ? 'maxLength' AND char_length(v_str) > (p_schema ->> 'maxLength')::integer THEN
            RETURN format('%s: longer than %s characters', v_where, p_schema ->> 'maxLength');
        END IF;
        IF p_schema ? 'pattern' AND v_str !~ (p_schema ->> 'pattern') THEN
            RETURN format('%s: does not match the pattern %s', v_where, p_schema ->> 'pattern');
        END IF;
    ELSIF v_kind = 'object' THEN
        IF p_schema ? 'required' THEN
            FOR v_key IN SELECT jsonb_array_elements_text(p_schema -> 'required') LOOP
                IF NOT v_inst ? v_key THEN
                    RETURN format('%s: required property "%s" is missing', v_where, v_key);
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'properties' THEN
            FOR v_key, v_sub IN SELECT e.key, e.value FROM jsonb_each(p_schema -> 'properties') AS e LOOP
                IF v_inst ? v_key THEN
                    v_err := whk.jsonschema_error(
                        v_sub, v_inst -> v_key,
                        p_path || '/' || replace(replace(v_key, '~', '~0'), '/', '~1'), v_root);
                    IF v_err IS NOT NULL THEN
                        RETURN v_err;
                    END IF;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'additionalProperties' AND p_schema -> 'additionalProperties' <> 'true'::jsonb THEN
            FOR v_key IN SELECT k FROM jsonb_object_keys(v_inst) AS k
                          WHERE NOT coalesce(p_schema -> 'properties' ? k, false) LOOP
                IF p_schema -> 'additionalProperties' = 'false'::jsonb THEN
                    RETURN format('%s: additional property "%s" is not allowed', v_where, v_key);
                END IF;
                v_err := whk.jsonschema_error(
                    p_schema -> 'additionalProperties', v_inst -> v_key,
                    p_path || '/' || replace(replace(v_key, '~', '~0'), '/', '~1'), v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'minProperties' OR p_schema ? 'maxProperties' THEN
            SELECT count(*) INTO v_n FROM jsonb_object_keys(v_inst);
            IF v_n < coalesce((p_schema ->> 'minProperties')::integer, 0) THEN
                RETURN format('%s: fewer than %s properties', v_where, p_schema ->> 'minProperties');
            END IF;
            IF v_n > coalesce((p_schema ->> 'maxProperties')::integer, v_n) THEN
                RETURN format('%s: more than %s properties', v_where, p_schema ->> 'maxProperties');
            END IF;
        END IF;
    ELSIF v_kind = 'array' THEN
        v_n := jsonb_array_length(v_inst);
        IF v_n < coalesce((p_schema ->> 'minItems')::integer, 0) THEN
            RETURN format('%s: fewer than %s items', v_where, p_schema ->> 'minItems');
        END IF;
        IF v_n > coalesce((p_schema ->> 'maxItems')::integer, v_n) THEN
            RETURN format('%s: more than %s items', v_where, p_schema ->> 'maxItems');
        END IF;
        IF p_schema -> 'uniqueItems' = 'true'::jsonb
           AND (SELECT count(DISTINCT e.value) FROM jsonb_array_elements(v_inst) AS e) < v_n THEN
            RETURN format('%s: items are not unique', v_where);
        END IF;
        IF p_schema ? 'prefixItems' THEN
            FOR v_sub, v_i IN SELECT e.value, e.ordinality - 1
                               FROM jsonb_array_elements(p_schema -> 'prefixItems') WITH ORDINALITY AS e LOOP
                EXIT WHEN v_i >= v_n;
                v_err := whk.jsonschema_error(v_sub, v_inst -> v_i::integer, p_path || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'items' THEN
            FOR v_i IN coalesce(jsonb_array_length(p_schema -> 'prefixItems'), 0) .. v_n - 1 LOOP
                v_err := whk.jsonschema_error(p_schema -> 'items', v_inst -> v_i::integer,
                                              p_path || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
    END IF;

    IF p_schema ? 'allOf' THEN
        FOR v_sub IN SELECT e.value FROM jsonb_array_elements(p_schema -> 'allOf') AS e LOOP
            v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
            IF v_err IS NOT NULL THEN
                RETURN v_err;
            END IF;
        END LOOP;
    END IF;
    IF p_schema ? 'anyOf' THEN
        v_str := NULL;
        FOR v_sub IN SELECT e.value FROM jsonb_array_elements(p_schema -> 'anyOf') AS e LOOP
            v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
            IF v_err IS NULL THEN
                v_str := 'ok';
                EXIT;
            END IF;
        END LOOP;
        IF v_str IS NULL THEN
            RETURN format('%s: matches none of the anyOf schemas', v_where);
        END IF;
    END IF;
    IF p_schema ? 'oneOf' THEN
        SELECT count(*) INTO v_n FROM jsonb_array_elements(p_schema -> 'oneOf') AS e
         WHERE whk.jsonschema_error(e.value, v_inst, p_path, v_root) IS NULL;
        IF v_n <> 1 THEN
            RETURN format('%s: matches %s of the oneOf schemas instead of exactly one', v_where, v_n);
        END IF;
    END IF;
    IF p_schema ? 'not' AND whk.jsonschema_error(p_schema -> 'not', v_inst, p_path, v_root) IS NULL THEN
        RETURN format('%s: must not match the schema under "not"', v_where);
    END IF;
    IF p_schema ? 'if' THEN
        IF whk.jsonschema_error(p_schema -> 'if', v_inst, p_path, v_root) IS NULL THEN
            RETURN whk.jsonschema_error(p_schema -> 'then', v_inst, p_path, v_root);
        END IF;
        RETURN whk.jsonschema_error(p_schema -> 'else', v_inst, p_path, v_root);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_error(jsonb, jsonb, text, jsonb) IS
    'First JSON Schema (2020-12 subset) violation of a value as "<pointer>: <message>", NULL when valid.';
-- <<< sql/functions/contracts/jsonschema_error.sql

-- >>> sql/functions/contracts/jsonschema_jsonpath.sql
-- whk.jsonschema_jsonpath: the compiled fast check of a JSON Schema (see whk.jsonschema_predicate), or NULL
-- when the schema needs the reference validator. Stored per schema version in
-- whk.whk_02_eventos_versoes.check_path (a generated column), so a version is compiled once, when it is
-- registered. A migration that changes the translation must recompute that column
-- (UPDATE whk.whk_02_eventos_versoes SET schema = schema).
CREATE OR REPLACE FUNCTION whk.jsonschema_jsonpath(p_schema jsonb)
RETURNS jsonpath
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_predicate text := whk.jsonschema_predicate(p_schema, '$');
BEGIN
    -- Strict mode: no automatic unwrapping of arrays (see whk.jsonschema_predicate).
    RETURN ('strict ' || v_predicate)::jsonpath;
EXCEPTION
    -- A schema whose numbers do not fit (or anything the translation did not foresee) is not worth
    -- failing a registration for: without a fast path the reference validator checks every payload.
    WHEN syntax_error OR invalid_text_representation OR numeric_value_out_of_range
         OR program_limit_exceeded THEN
        RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_jsonpath(jsonb) IS
    'The jsonpath fast check of a JSON Schema (TRUE only when valid), NULL when only the reference validator applies.';
-- <<< sql/functions/contracts/jsonschema_jsonpath.sql

-- >>> sql/functions/contracts/jsonschema_predicate.sql
-- whk.jsonschema_predicate: translate a JSON Schema (the subset whk.jsonschema_error implements) into an
-- SQL/JSON path predicate over the JSON item written p_at ('$' at the top, '@' inside a filter), or NULL
-- when the schema uses an assertion this translation cannot express EXACTLY.
--
-- Why: whk.jsonschema_error walks the schema in PL/pgSQL, ~180 us for a small event schema, paid for every
-- routed event of a registered type and inside every ERP transaction that emits a strict type. The same
-- check as a jsonpath runs in C (`data @@ path`) in a few microseconds. whk.validate_payload uses it as a
-- fast path: TRUE = valid; anything else (FALSE, or NULL when the predicate is unknown) falls back to
-- whk.jsonschema_error, which stays the reference and writes the error message. So the translation only
-- has to be SOUND: it may answer FALSE/unknown for a valid value (slower, still correct) but never TRUE
-- for an invalid one. tests/db/test_jsonschema_fast_path.py checks it against the reference, both ways.
--
-- How it is kept exact: the path runs in strict mode (whk.jsonschema_jsonpath prefixes `strict`), so arrays
-- are never unwrapped (lax mode would apply a filter to the elements of an array item, or compare a scalar
-- with each element of an array). Every keyword that applies to one JSON type is guarded by the item's
-- `.type()`; a member is read only after its presence test (a missing member is an error in strict mode)
-- and `||`/`&&` short-circuit, so the guarded part is never evaluated on the wrong item.
-- Presence is `!((exists (X."k")) is unknown)`: in strict mode `exists` is TRUE for a present member and
-- UNKNOWN for a missing one, and `is unknown` makes that a plain boolean. It finds the member in place.
-- Until migration 0021 it was `exists (X.keyvalue() ? (@.key == "k"))`, which builds a {key, value, id}
-- object, value copied, for EVERY member of X on every test: for a captured row with a 900-byte column the
-- check of order.created cost ~117 us per routed event (measured in whk.route_and_take, 10 events a round).
-- Inside filters an unknown predicate is counted as a failure (`is unknown`), so an error can never make a
-- filter drop the item that breaks the rule.
--
-- Not translated (NULL, the reference validates): $ref, minLength/maxLength (PostgreSQL 15 jsonpath has
-- no string length), pattern (like_regex is not the `~` dialect), minProperties/maxProperties,
-- uniqueItems, oneOf, prefixItems, schema-valued additionalProperties, const/enum with objects or arrays.
-- Keywords the reference ignores (annotations, format, $defs, ...) are ignored here too.
CREATE OR REPLACE FUNCTION whk.jsonschema_predicate(p_schema jsonb, p_at text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_true  CONSTANT text := '(1 == 1)';
    c_false CONSTANT text := '(1 == 2)';
    v_all   text[] := '{}';   -- conjunction over every kind
    v_kind  text[];           -- conjunction of the rules of one kind
    v_alts  text[];
    v_sub   text;
    v_cond  text;
    v_key   text;
    v_val   jsonb;
    v_item  jsonb;
    v_t     text;
BEGIN
    IF p_schema = 'false'::jsonb THEN
        RETURN c_false;
    END IF;
    IF p_schema IS NULL OR jsonb_typeof(p_schema) <> 'object' THEN
        RETURN c_true;  -- the reference: no schema, `true` and other non-object schemas assert nothing
    END IF;
    IF p_schema ?| ARRAY['$ref', 'minLength', 'maxLength', 'pattern', 'minProperties', 'maxProperties',
                         'uniqueItems', 'oneOf', 'prefixItems']
       OR (p_schema ? 'additionalProperties'
           AND p_schema -> 'additionalProperties' NOT IN ('true'::jsonb, 'false'::jsonb)) THEN
        RETURN NULL;
    END IF;

    IF p_schema ? 'type' THEN
        v_alts := '{}';
        FOR v_t IN SELECT t FROM jsonb_array_elements_text(CASE jsonb_typeof(p_schema -> 'type')
                                                               WHEN 'array' THEN p_schema -> 'type'
                                                               ELSE jsonb_build_array(p_schema -> 'type') END) AS t LOOP
            IF v_t = 'integer' THEN
                v_alts := v_alts || format('(%1$s.type() == "number" && %1$s.floor() == %1$s)', p_at);
            ELSIF v_t IN ('object', 'array', 'string', 'number', 'boolean', 'null') THEN
                v_alts := v_alts || format('%s.type() == "%s"', p_at, v_t);
            END IF;  -- an unknown type name matches nothing (as in the reference)
        END LOOP;
        v_all := v_all || CASE WHEN cardinality(v_alts) = 0 THEN c_false
                               ELSE '(' || array_to_string(v_alts, ' || ') || ')' END;
    END IF;

    -- const / enum: scalars only, compared under a type guard.
    FOR v_key, v_val IN
        SELECT 'const', p_schema -> 'const' WHERE p_schema ? 'const'
        UNION ALL
        SELECT 'enum', p_schema -> 'enum' WHERE p_schema ? 'enum'
    LOOP
        v_alts := '{}';
        FOR v_item IN SELECT e FROM jsonb_array_elements(CASE WHEN v_key = 'const' THEN jsonb_build_array(v_val)
                                                              ELSE v_val END) AS e LOOP
            IF jsonb_typeof(v_item) IN ('object', 'array') THEN
                RETURN NULL;
            END IF;
            v_alts := v_alts || CASE jsonb_typeof(v_item)
                WHEN 'null' THEN format('%s.type() == "null"', p_at)
                WHEN 'string' THEN format('(%1$s.type() == "string" && %1$s == %2$s)', p_at, v_item::text)
                WHEN 'number' THEN format('(%1$s.type() == "number" && %1$s == %2$s)', p_at, (v_item #>> '{}')::numeric)
                ELSE format('(%1$s.type() == "boolean" && %1$s == %2$s)', p_at, v_item::text)
                END;
        END LOOP;
        v_all := v_all || CASE WHEN cardinality(v_alts) = 0 THEN c_false
                               ELSE '(' || array_to_string(v_alts, ' || ') || ')' END;
    END LOOP;

    -- Numbers.
    v_kind := '{}';
    FOR v_key, v_t IN SELECT k, o FROM (VALUES ('minimum', '>='), ('exclusiveMinimum', '>'), ('maximum', '<='),
                                               ('exclusiveMaximum', '<')) AS r(k, o)
                       WHERE p_schema ? r.k LOOP
        v_kind := v_kind || format('%s %s %s', p_at, v_t, (p_schema ->> v_key)::numeric);
    END LOOP;
    IF p_schema ? 'multipleOf' THEN
        v_kind := v_kind || format('%s %% %s == 0', p_at, (p_schema ->> 'multipleOf')::numeric);
    END IF;
    IF cardinality(v_kind) > 0 THEN
        v_all := v_all || format('(%s.type() != "number" || (%s))', p_at, array_to_string(v_kind, ' && '));
    END IF;

    -- Objects.
    v_kind := '{}';
    IF p_schema ? 'required' THEN
        FOR v_key IN SELECT jsonb_array_elements_text(p_schema -> 'required') LOOP
            v_kind := v_kind || format('!((exists (%s.%s)) is unknown)', p_at, to_jsonb(v_key)::text);
        END LOOP;
    END IF;
    IF p_schema ? 'properties' THEN
        FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_schema -> 'properties') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at || '.' || to_jsonb(v_key)::text);
            IF v_sub IS NULL THEN
                RETURN NULL;
            ELSIF v_sub <> c_true THEN
                v_kind := v_kind || format('((exists (%s.%s)) is unknown || %s)',
                                           p_at, to_jsonb(v_key)::text, v_sub);
            END IF;
        END LOOP;
    END IF;
    IF p_schema -> 'additionalProperties' = 'false'::jsonb THEN
        v_cond := (SELECT string_agg(format('@.key != %s', to_jsonb(k)::text), ' && ')
                   FROM jsonb_object_keys(coalesce(p_schema -> 'properties', '{}')) AS k);
        v_kind := v_kind || format('!exists (%s.keyvalue()%s)', p_at,
                                   CASE WHEN v_cond IS NULL THEN '' ELSE ' ? (' || v_cond || ')' END);
    END IF;
    IF cardinality(v_kind) > 0 THEN
        v_all := v_all || format('(%s.type() != "object" || (%s))', p_at, array_to_string(v_kind, ' && '));
    END IF;

    -- Arrays.
    v_kind := '{}';
    IF p_schema ? 'minItems' THEN
        v_kind := v_kind || format('%s.size() >= %s', p_at, (p_schema ->> 'minItems')::integer);
    END IF;
    IF p_schema ? 'maxItems' THEN
        v_kind := v_kind || format('%s.size() <= %s', p_at, (p_schema ->> 'maxItems')::integer);
    END IF;
    IF p_schema ? 'items' THEN
        v_sub := whk.jsonschema_predicate(p_schema -> 'items', '@');
        IF v_sub IS NULL THEN
            RETURN NULL;
        ELSIF v_sub <> c_true THEN
            v_kind := v_kind || format('!exists (%s[*] ? (!(%s) || (%s) is unknown))', p_at, v_sub, v_sub);
        END IF;
    END IF;
    IF cardinality(v_kind) > 0 THEN
        v_all := v_all || format('(%s.type() != "array" || (%s))', p_at, array_to_string(v_kind, ' && '));
    END IF;

    -- Combinators.
    IF p_schema ? 'allOf' THEN
        FOR v_val IN SELECT e FROM jsonb_array_elements(p_schema -> 'allOf') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at);
            IF v_sub IS NULL THEN
                RETURN NULL;
            END IF;
            v_all := v_all || v_sub;
        END LOOP;
    END IF;
    IF p_schema ? 'anyOf' THEN
        v_alts := '{}';
        FOR v_val IN SELECT e FROM jsonb_array_elements(p_schema -> 'anyOf') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at);
            IF v_sub IS NULL THEN
                RETURN NULL;
            END IF;
            v_alts := v_alts || v_sub;
        END LOOP;
        v_all := v_all || CASE WHEN cardinality(v_alts) = 0 THEN c_false
                               ELSE '(' || array_to_string(v_alts, ' || ') || ')' END;
    END IF;
    IF p_schema ? 'not' THEN
        v_sub := whk.jsonschema_predicate(p_schema -> 'not', p_at);
        IF v_sub IS NULL THEN
            RETURN NULL;
        END IF;
        v_all := v_all || format('!(%s)', v_sub);
    END IF;
    IF p_schema ? 'if' THEN
        v_cond := whk.jsonschema_predicate(p_schema -> 'if', p_at);
        v_sub := whk.jsonschema_predicate(p_schema -> 'then', p_at);
        v_t := whk.jsonschema_predicate(p_schema -> 'else', p_at);
        IF v_cond IS NULL OR v_sub IS NULL OR v_t IS NULL THEN
            RETURN NULL;
        END IF;
        v_all := v_all || format('((%1$s && %2$s) || (!(%1$s) && %3$s))', v_cond, v_sub, v_t);
    END IF;

    RETURN CASE WHEN cardinality(v_all) = 0 THEN c_true ELSE '(' || array_to_string(v_all, ' && ') || ')' END;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_predicate(jsonb, text) IS
    'The jsonpath predicate equivalent to a JSON Schema at a path, or NULL when it cannot be expressed exactly.';
-- <<< sql/functions/contracts/jsonschema_predicate.sql

-- >>> sql/functions/contracts/jsonschema_problem.sql
-- whk.jsonschema_problem: is this a JSON Schema that whk.jsonschema_error can enforce completely?
-- Returns NULL when it is, else '<pointer into the schema>: <problem>'. Assertion keywords outside the
-- supported subset are refused rather than ignored, so a registered schema always means what it says.
CREATE OR REPLACE FUNCTION whk.jsonschema_problem(p_schema jsonb, p_path text DEFAULT '', p_root jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_root     jsonb := coalesce(p_root, p_schema);
    v_where    text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_key      text;
    v_name     text;
    v_val      jsonb;
    v_err      text;
    v_sub      jsonb;
    v_i        bigint;
    c_annotations CONSTANT text[] := ARRAY['$schema', '$id', '$comment', '$anchor', 'title', 'description',
        'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'format', 'contentEncoding',
        'contentMediaType', 'x-whk'];
    c_numbers  CONSTANT text[] := ARRAY['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
        'multipleOf'];
    c_counts   CONSTANT text[] := ARRAY['minLength', 'maxLength', 'minItems', 'maxItems', 'minProperties',
        'maxProperties'];
    c_types    CONSTANT text[] := ARRAY['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'];
BEGIN
    IF p_schema IS NULL THEN
        RETURN v_where || ': schema is missing';
    END IF;
    IF jsonb_typeof(p_schema) = 'boolean' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_schema) <> 'object' THEN
        RETURN format('%s: a schema is a JSON object or a boolean, not %s', v_where, jsonb_typeof(p_schema));
    END IF;
    FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_schema) AS e LOOP
        CONTINUE WHEN v_key = ANY (c_annotations);
        IF v_key = 'type' THEN
            IF NOT (jsonb_typeof(v_val) = 'string' AND v_val #>> '{}' = ANY (c_types))
               AND NOT (jsonb_typeof(v_val) = 'array' AND jsonb_array_length(v_val) > 0
                        AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_val) AS t
                                        WHERE jsonb_typeof(t.value) <> 'string'
                                           OR NOT (t.value #>> '{}' = ANY (c_types)))) THEN
                RETURN format('%s/type: must be one of %s or an array of them', p_path, array_to_string(c_types, ', '));
            END IF;
        ELSIF v_key = ANY (c_numbers) THEN
            IF jsonb_typeof(v_val) <> 'number' OR (v_key = 'multipleOf' AND v_val::numeric <= 0) THEN
                RETURN format('%s/%s: must be a number%s', p_path, v_key,
                              CASE WHEN v_key = 'multipleOf' THEN ' greater than 0' ELSE '' END);
            END IF;
        ELSIF v_key = ANY (c_counts) THEN
            IF jsonb_typeof(v_val) <> 'number' OR v_val::numeric < 0 OR v_val::numeric % 1 <> 0 THEN
                RETURN format('%s/%s: must be a non-negative integer', p_path, v_key);
            END IF;
        ELSIF v_key = 'pattern' THEN
            IF jsonb_typeof(v_val) <> 'string' THEN
                RETURN format('%s/pattern: must be a string', p_path);
            END IF;
            BEGIN
                PERFORM '' ~ (v_val #>> '{}');
            EXCEPTION WHEN invalid_regular_expression THEN
                RETURN format('%s/pattern: not a valid regular expression: %s', p_path, SQLERRM);
            END;
        ELSIF v_key = 'required' THEN
            IF jsonb_typeof(v_val) <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_val) AS r WHERE jsonb_typeof(r.value) <> 'string') THEN
                RETURN format('%s/required: must be an array of property names', p_path);
            END IF;
        ELSIF v_key = 'enum' THEN
            IF jsonb_typeof(v_val) <> 'array' THEN
                RETURN format('%s/enum: must be an array', p_path);
            END IF;
        ELSIF v_key IN ('const', 'uniqueItems') THEN
            IF v_key = 'uniqueItems' AND jsonb_typeof(v_val) <> 'boolean' THEN
                RETURN format('%s/uniqueItems: must be a boolean', p_path);
            END IF;
        ELSIF v_key IN ('properties', '$defs', 'definitions') THEN
            IF jsonb_typeof(v_val) <> 'object' THEN
                RETURN format('%s/%s: must be an object of schemas', p_path, v_key);
            END IF;
            FOR v_name, v_sub IN SELECT e.key, e.value FROM jsonb_each(v_val) AS e LOOP
                v_err := whk.jsonschema_problem(
                    v_sub, p_path || '/' || v_key || '/' || replace(replace(v_name, '~', '~0'), '/', '~1'), v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key IN ('additionalProperties', 'items', 'not', 'if', 'then', 'else') THEN
            v_err := whk.jsonschema_problem(v_val, p_path || '/' || v_key, v_root);
            IF v_err IS NOT NULL THEN
                RETURN v_err;
            END IF;
        ELSIF v_key IN ('allOf', 'anyOf', 'oneOf', 'prefixItems') THEN
            IF jsonb_typeof(v_val) <> 'array' OR jsonb_array_length(v_val) = 0 THEN
                RETURN format('%s/%s: must be a non-empty array of schemas', p_path, v_key);
            END IF;
            FOR v_sub, v_i IN SELECT e.value, e.ordinality - 1 FROM jsonb_array_elements(v_val) WITH ORDINALITY AS e LOOP
                v_err := whk.jsonschema_problem(v_sub, p_path || '/' || v_key || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key = '$ref' THEN
            IF jsonb_typeof(v_val) <> 'string' OR NOT (v_val #>> '{}' = '#' OR v_val #>> '{}' LIKE '#/%') THEN
                RETURN format('%s/$ref: only local references ("#", "#/$defs/name") are supported', p_path);
            END IF;
            IF v_val #>> '{}' <> '#' AND v_root #> ARRAY(
                   SELECT replace(replace(s, '~1', '/'), '~0', '~')
                   FROM unnest(string_to_array(substr(v_val #>> '{}', 3), '/')) AS s) IS NULL THEN
                RETURN format('%s/$ref: %s does not resolve inside this schema', p_path, v_val #>> '{}');
            END IF;
        ELSE
            RETURN format('%s/%s: keyword not supported by WHK''s validator', p_path, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_problem(jsonb, text, jsonb) IS
    'NULL when a JSON Schema uses only what whk.jsonschema_error enforces, else the first problem.';
-- <<< sql/functions/contracts/jsonschema_problem.sql

-- >>> sql/functions/contracts/register_event_transform.sql
-- whk.register_event_transform: bridge two majors of an event type with an SQL function, so a webhook
-- pinned to one major (payload_version) still receives events published in another, rendered
-- (docs/capture.md, "Versions and transforms"). Chains are followed (3 -> 2 -> 1): register one step per
-- pair of neighbouring majors, in the directions subscribers need.
--
-- The function takes the event's `data` (jsonb) and returns the data in to_major's shape; it must be
-- IMMUTABLE or STABLE (a pure function of the data: the dispatcher runs it inside its routing statement,
-- with the dispatcher's role) and executable by whk_dispatcher. from_major / to_major may name a published
-- major or the next one, so a bridge can exist before the major it comes from is published (then
-- whk.register_event_type(..., new_major => true) finds no pinned webhook left without one).
--
-- Registering the same pair again replaces the function. Either way, deliveries of this type parked for a
-- missing or failing transform are rendered again at once (whk.render_parked_deliveries): returns how
-- many left the parking lot. SQL only: choosing code that runs in the dispatcher is a DBA's act.
CREATE OR REPLACE FUNCTION whk.register_event_transform(event_type text, from_major integer, to_major integer,
                                                        "function" text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type  text    := register_event_transform.event_type;
    p_from  integer := register_event_transform.from_major;
    p_to    integer := register_event_transform.to_major;
    p_fn    text    := register_event_transform."function";
    v_type  whk.whk_02_eventos%ROWTYPE;
    v_oid   regprocedure;
    v_proc  pg_catalog.pg_proc%ROWTYPE;
    v_nsp   text;
    v_name  text;
    v_major integer;
BEGIN
    SELECT * INTO v_type FROM whk.whk_02_eventos e WHERE e.name = p_type FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'transforms bridge the majors of a registered type: SELECT name, current_major FROM whk.whk_02_eventos';
    END IF;
    FOREACH v_major IN ARRAY ARRAY[p_from, p_to] LOOP
        IF v_major IS NULL OR v_major < 1 OR v_major > v_type.current_major + 1 THEN
            RAISE EXCEPTION 'major % of % is neither published nor the next one', coalesce(v_major::text, 'NULL'), p_type
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('from_major and to_major are between 1 and %s (%s is at %s.%s; %s is the next major)',
                                    v_type.current_major + 1, p_type, v_type.current_major, v_type.current_minor,
                                    v_type.current_major + 1);
        END IF;
    END LOOP;
    IF p_from = p_to THEN
        RAISE EXCEPTION 'a transform joins two different majors, got % and %', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a webhook pinned to the event''s own major needs no transform';
    END IF;

    BEGIN
        v_oid := CASE WHEN p_fn LIKE '%(%' THEN to_regprocedure(p_fn) ELSE to_regproc(p_fn)::oid::regprocedure END;
    EXCEPTION WHEN OTHERS THEN
        v_oid := NULL;  -- not a function name at all (e.g. unbalanced parentheses): the same answer
    END;
    IF v_oid IS NULL THEN
        RAISE EXCEPTION 'no function %', coalesce(quote_literal(p_fn), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'create it first, e.g. CREATE FUNCTION erp.order_v2_to_v1(data jsonb) RETURNS jsonb '
                         'LANGUAGE sql IMMUTABLE RETURN data - ''currency''; and pass ''erp.order_v2_to_v1'' '
                         '(schema-qualified; with several overloads, ''erp.order_v2_to_v1(jsonb)'')';
    END IF;
    SELECT * INTO v_proc FROM pg_catalog.pg_proc p WHERE p.oid = v_oid;
    SELECT n.nspname INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.oid = v_proc.pronamespace;
    IF v_proc.prokind <> 'f' OR v_proc.proretset OR v_proc.pronargs <> 1
       OR v_proc.proargtypes[0] <> 'jsonb'::regtype OR v_proc.prorettype <> 'jsonb'::regtype THEN
        RAISE EXCEPTION 'function % is not (jsonb) RETURNS jsonb', v_oid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a transform takes the event''s data and returns it in the other major''s shape: '
                         '(data jsonb) RETURNS jsonb, one argument, no SETOF';
    END IF;
    IF v_proc.provolatile = 'v' THEN
        RAISE EXCEPTION 'function % is VOLATILE', v_oid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('a transform is a pure function of the data, run inside the dispatcher''s routing: '
                                'ALTER FUNCTION %s IMMUTABLE (or STABLE)', v_oid);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'whk_dispatcher')
       AND NOT (has_function_privilege('whk_dispatcher', v_oid, 'EXECUTE')
                AND has_schema_privilege('whk_dispatcher', v_proc.pronamespace, 'USAGE')) THEN
        RAISE EXCEPTION 'whk_dispatcher may not call function %', v_oid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('the dispatcher renders events: GRANT USAGE ON SCHEMA %I TO whk_dispatcher; '
                                'GRANT EXECUTE ON FUNCTION %s TO whk_dispatcher', v_nsp, v_oid);
    END IF;
    v_name := format('%I.%I', v_nsp, v_proc.proname);

    INSERT INTO whk.whk_02_eventos_transforms AS t (event_type_id, from_major, to_major, function)
    VALUES (v_type.id, p_from, p_to, v_name)
    ON CONFLICT (event_type_id, from_major, to_major)
    DO UPDATE SET function = excluded.function, updated_at = now();
    RETURN whk.render_parked_deliveries(p_type);
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.register_event_transform(text, integer, integer, text) FROM PUBLIC;
COMMENT ON FUNCTION whk.register_event_transform(text, integer, integer, text) IS
    'Bridge two majors of an event type with a (data jsonb) RETURNS jsonb function; re-renders parked deliveries.';
-- <<< sql/functions/contracts/register_event_transform.sql

-- >>> sql/functions/contracts/register_event_type.sql
-- whk.register_event_type: add an event type to the catalog or publish a new schema version of it.
-- A new type starts at 1.0. For an existing type the schema is compared with the latest version of its
-- current major: identical = nothing new; backward compatible = next minor (1.0 -> 1.1); breaking =
-- refused unless new_major, which publishes (major + 1).0. Returns the resulting version 'major.minor'.
-- description / strict / category: NULL keeps what the type has (new types: '', false, the prefix).
--
-- A new major is refused while a webhook subscribed to the type is pinned to another major
-- (payload_version) that no chain of transforms reaches from the new one (whk.event_transform_path): the
-- error lists them, so publishing never silently strands a subscriber. force => true publishes anyway;
-- their deliveries are then parked by the router with the missing transform as the reason, and released
-- when it is registered (whk.register_event_transform). Disabled webhooks count (they may be resumed);
-- deleted ones do not.
--
-- The signature gained `force`: the old one is dropped so a database built before it keeps no ambiguous
-- overload.
DROP FUNCTION IF EXISTS whk.register_event_type(text, jsonb, text, boolean, boolean, text, text);
CREATE OR REPLACE FUNCTION whk.register_event_type(
    event_type  text,
    schema      jsonb,
    description text DEFAULT NULL,
    strict      boolean DEFAULT NULL,
    new_major   boolean DEFAULT false,
    category    text DEFAULT NULL,
    changelog   text DEFAULT NULL,
    force       boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- Parameters keep the public names (named notation: new_major => true); the body uses these copies.
    p_event_type  text    := register_event_type.event_type;
    p_schema      jsonb   := register_event_type.schema;
    p_description text    := register_event_type.description;
    p_strict      boolean := register_event_type.strict;
    p_new_major   boolean := coalesce(register_event_type.new_major, false);
    p_category    text    := register_event_type.category;
    p_changelog   text    := register_event_type.changelog;
    p_force       boolean := coalesce(register_event_type.force, false);
    v_type    whk.whk_02_eventos%ROWTYPE;
    v_latest  jsonb;
    v_problem text;
    v_break   text;
    v_major   integer;
    v_minor   integer;
    v_pinned  text;
BEGIN
    IF p_event_type IS NULL OR p_event_type !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        RAISE EXCEPTION 'invalid event type name %', coalesce(quote_literal(p_event_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use lowercase dotted names such as ''invoice.paid'' (letters, digits, _; at least one dot)';
    END IF;
    v_problem := whk.jsonschema_problem(p_schema);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'schema of % is not usable: %', p_event_type, v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'schemas are JSON Schema (draft 2020-12) objects using the subset listed in docs/capture.md';
    END IF;
    IF jsonb_typeof(p_schema) = 'boolean' THEN
        p_schema := CASE WHEN p_schema = 'true'::jsonb THEN '{}'::jsonb ELSE '{"not": {}}'::jsonb END;
    END IF;

    -- Concurrent registrations of one type serialise on its catalog row.
    INSERT INTO whk.whk_02_eventos (name, description, category, strict, current_major, current_minor)
    VALUES (p_event_type, coalesce(p_description, ''), coalesce(p_category, split_part(p_event_type, '.', 1)),
            coalesce(p_strict, false), 1, 0)
    ON CONFLICT (name) DO NOTHING;
    IF FOUND THEN
        SELECT * INTO v_type FROM whk.whk_02_eventos WHERE name = p_event_type;
        INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
        VALUES (v_type.id, 1, 0, p_schema, coalesce(p_changelog, 'initial version'));
        RETURN '1.0';
    END IF;

    SELECT * INTO v_type FROM whk.whk_02_eventos WHERE name = p_event_type FOR UPDATE;
    SELECT v.schema INTO v_latest
      FROM whk.whk_02_eventos_versoes v
     WHERE v.event_type_id = v_type.id AND v.major = v_type.current_major AND v.minor = v_type.current_minor;

    v_major := v_type.current_major;
    v_minor := v_type.current_minor;
    IF p_new_major THEN
        v_major := v_major + 1;
        v_minor := 0;
        SELECT string_agg(format('%s %L (pinned to v%s)', w.id, w.name, w.payload_version), ', ' ORDER BY w.id)
          INTO v_pinned
          FROM whk.whk_01_webhooks w
         WHERE w.deleted_at IS NULL AND w.payload_version IS NOT NULL AND w.payload_version <> v_major
           AND whk.event_type_matches(w.event_types, p_event_type)
           AND whk.event_transform_path(p_event_type, v_major, w.payload_version) IS NULL;
        IF v_pinned IS NOT NULL AND NOT p_force THEN
            RAISE EXCEPTION 'publishing % version %.0 would strand webhooks pinned to another major: %',
                            p_event_type, v_major, v_pinned
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'no chain of transforms renders version ' || v_major || ' for these webhooks',
                      HINT = format('register a transform first, e.g. SELECT whk.register_event_transform(%L, %s, %s, '
                                    '''<schema>.<function>''), or re-pin the webhooks; force => true publishes '
                                    'anyway and parks their deliveries until a transform exists',
                                    p_event_type, v_major, v_major - 1);
        END IF;
    ELSIF v_latest IS DISTINCT FROM p_schema THEN
        v_break := whk.jsonschema_breaking_change(v_latest, p_schema);
        IF v_break IS NOT NULL THEN
            RAISE EXCEPTION 'breaking schema change for % in major version %: %', p_event_type, v_major, v_break
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'within a major version a schema may only change in backward compatible ways '
                               '(new optional properties, new enum values, looser bounds)',
                      HINT = format('keep version %s.%s compatible, or publish version %s.0 with '
                                    'SELECT whk.register_event_type(%L, <schema>, new_major => true)',
                                    v_major, v_minor, v_major + 1, p_event_type);
        END IF;
        v_minor := v_minor + 1;
    END IF;

    IF (v_major, v_minor) <> (v_type.current_major, v_type.current_minor) THEN
        INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
        VALUES (v_type.id, v_major, v_minor, p_schema,
                coalesce(p_changelog, CASE WHEN v_minor = 0 THEN 'breaking change' ELSE 'backward compatible change' END));
    END IF;
    UPDATE whk.whk_02_eventos
       SET current_major = v_major,
           current_minor = v_minor,
           description = coalesce(p_description, description),
           strict = coalesce(p_strict, strict),
           category = coalesce(p_category, category),
           updated_at = now()
     WHERE id = v_type.id;

    IF v_major <> v_type.current_major THEN
        -- Capture triggers carry the major of their types baked in: regenerate the affected ones.
        PERFORM whk.capture_install(c.tbl)
           FROM whk.capture_config c
          WHERE p_event_type IN (c.event_prefix || '.created', c.event_prefix || '.updated', c.event_prefix || '.deleted');
    END IF;
    RETURN v_major || '.' || v_minor;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text, boolean) FROM PUBLIC;
-- The API registers event types (POST /api/whk/event-types).
GRANT EXECUTE ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text, boolean) TO whk_app;
COMMENT ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text, boolean) IS
    'Register an event type or a new schema version: compatible = minor bump, breaking = refused unless new_major; a new major stranding pinned webhooks = refused unless force.';
-- <<< sql/functions/contracts/register_event_type.sql

-- >>> sql/functions/contracts/render_event.sql
-- whk.render_event: the body a webhook pinned to p_to_major receives for an event of p_from_major: the
-- envelope with its data passed through the chain of transforms (whk.event_transform_path) and a
-- "version" member naming the major it now has. `type` and `timestamp` are kept: a transform renders the
-- data only. p_to_major NULL (an unpinned webhook): (NULL, NULL), the event's own envelope is sent.
--
-- Fault isolation: this never raises for a missing chain or a transform's error. It returns the reason
-- in `problem` (body NULL) and the router parks that one delivery with it; every other delivery of the
-- routing statement goes on. Each transform runs in its own subtransaction (the EXCEPTION block), which
-- costs an XID only if the transform writes. A transform that never returns holds routing up like any
-- slow statement: transforms must be cheap, pure functions of the data.
-- The function is called by name from pg_proc, never by the stored text, so nothing in the table can
-- change the statement that runs.
CREATE OR REPLACE FUNCTION whk.render_event(p_envelope jsonb, p_event_type text, p_from_major integer,
                                            p_to_major integer, OUT body jsonb, OUT problem text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_path text[];
    v_fn   text;
    v_call text;
    v_data jsonb := p_envelope -> 'data';
BEGIN
    IF p_to_major IS NULL OR p_envelope IS NULL THEN
        RETURN;
    END IF;
    IF p_from_major IS DISTINCT FROM p_to_major THEN
        v_path := whk.event_transform_path(p_event_type, p_from_major, p_to_major);
        IF v_path IS NULL THEN
            problem := format('no transform from %s v%s to v%s (the webhook''s pinned major): register one with '
                              'SELECT whk.register_event_transform(%L, %s, %s, ''<schema>.<function>'')',
                              p_event_type, p_from_major, p_to_major, p_event_type, p_from_major, p_to_major);
            RETURN;
        END IF;
        FOREACH v_fn IN ARRAY v_path LOOP
            BEGIN
                SELECT format('%I.%I($1)', n.nspname, p.proname) INTO STRICT v_call
                FROM pg_catalog.pg_proc p
                JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE p.oid = to_regprocedure(v_fn || '(jsonb)');
                EXECUTE 'SELECT ' || v_call INTO v_data USING v_data;
            EXCEPTION WHEN OTHERS THEN
                problem := left(format('transform %s(jsonb) of %s failed (%s): %s', v_fn, p_event_type, SQLSTATE,
                                       CASE WHEN SQLSTATE = 'P0002' THEN 'the function no longer exists'
                                            ELSE SQLERRM END), 2000);
                RETURN;
            END;
            IF v_data IS NULL THEN
                problem := format('transform %s(jsonb) of %s returned NULL', v_fn, p_event_type);
                RETURN;
            END IF;
        END LOOP;
    END IF;
    body := jsonb_set(p_envelope, '{data}', v_data) || jsonb_build_object('version', p_to_major);
END;
$$;
COMMENT ON FUNCTION whk.render_event(jsonb, text, integer, integer) IS
    'Envelope rendered to a pinned major (data through the transforms, plus "version"), or the problem why not.';
-- <<< sql/functions/contracts/render_event.sql

-- >>> sql/functions/contracts/render_parked_deliveries.sql
-- whk.render_parked_deliveries: render again the deliveries parked because their body could not be
-- rendered for their webhook's pinned major (whk_03_entregas.render_problem), of one event type or (NULL)
-- of all. whk.register_event_transform calls it; call it yourself after fixing a transform's body with
-- CREATE OR REPLACE FUNCTION, or after re-pinning a webhook.
--
-- Each delivery rendered now, with the same rules as routing (whk.render_event, then the webhook's filter
-- on the rendered body):
-- * its webhook and consumer can receive: pending, due now (same event_id, so the same webhook-id);
-- * its webhook or consumer is disabled: stays parked as any delivery of a disabled webhook, now released
--   by whk.resume_webhook / whk.set_consumer_status like the others;
-- * the rendered body does not match the webhook's filter: cancelled, never sent (routing would not have
--   created it), with the reason kept in render_problem.
-- One that still cannot be rendered stays parked with the new reason. Returns how many were released
-- (pending, or handed over to the webhook's own parking).
CREATE OR REPLACE FUNCTION whk.render_parked_deliveries(p_event_type text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
#variable_conflict use_column
DECLARE
    v_released integer;
BEGIN
    WITH parked AS (
        SELECT d.id, x.body, x.problem, w.filter, coalesce(x.body, whk.event_envelope(o)) AS sent,
               w.status = 'disabled' OR a.status = 'disabled' AS held
        FROM whk.whk_03_entregas d
        JOIN whk.outbox o ON o.id = d.outbox_id AND o.created_at = d.event_created_at
        JOIN whk.whk_01_webhooks w ON w.id = d.webhook_id
        JOIN whk.whk_04_assinantes a ON a.id = d.consumer_id
        CROSS JOIN LATERAL whk.render_event(whk.event_envelope(o), o.event_type, o.event_version,
                                            w.payload_version) x
        WHERE d.render_problem IS NOT NULL AND d.status = 'parked'
          AND (p_event_type IS NULL OR d.event_type = p_event_type)
          AND w.deleted_at IS NULL
        FOR UPDATE OF d
    ), verdict AS (
        SELECT p.id, p.body, p.problem, p.held,
               p.problem IS NULL
               AND (p.filter IS NULL OR coalesce(p.sent @@ p.filter, false)) AS wanted
        FROM parked p
    ), changed AS (
        UPDATE whk.whk_03_entregas d
        SET payload = v.body,
            render_problem = CASE WHEN v.problem IS NOT NULL THEN v.problem
                                  WHEN NOT v.wanted THEN 'rendered, it does not match the webhook''s filter: not sent'
                             END,
            status = CASE WHEN v.problem IS NOT NULL OR (v.wanted AND v.held) THEN 'parked'
                          WHEN v.wanted THEN 'pending'
                          ELSE 'cancelled' END,
            next_attempt_at = clock_timestamp(), schedule_offset = d.attempts, updated_at = clock_timestamp()
        FROM verdict v
        WHERE d.id = v.id
        RETURNING d.status, d.render_problem
    )
    SELECT count(*) FILTER (WHERE c.render_problem IS NULL) INTO v_released FROM changed c;
    RETURN v_released;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.render_parked_deliveries(text) FROM PUBLIC;
COMMENT ON FUNCTION whk.render_parked_deliveries(text) IS
    'Render again deliveries parked for their pinned major (after a transform is registered or fixed); returns how many left.';
-- <<< sql/functions/contracts/render_parked_deliveries.sql

-- >>> sql/functions/contracts/validate_payload.sql
-- whk.validate_payload: check an event body (the envelope built by whk.event_envelope) against the
-- schema of its type and major version. NULL = valid, else '<JSON pointer>: <what is wrong>'.
-- The router calls it for non-strict types and stores the answer in outbox.valid / validation_error;
-- whk.emit calls it for strict types on the row it just wrote (an invalid one raises, undoing the row). version NULL = the type's current major;
-- the latest minor of that major is used (minors are backward compatible by construction).
CREATE OR REPLACE FUNCTION whk.validate_payload(event_type text, version integer, payload jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type    text := validate_payload.event_type;
    p_version integer := validate_payload.version;
    v_schema  jsonb;
    v_check   jsonpath;
    v_major   integer;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RETURN '/: expected the envelope object {"type", "timestamp", "data"}';
    END IF;
    IF payload -> 'type' IS DISTINCT FROM to_jsonb(p_type) THEN
        RETURN format('/type: expected "%s", got %s', p_type, coalesce((payload -> 'type')::text, 'nothing'));
    END IF;
    IF jsonb_typeof(payload -> 'timestamp') IS DISTINCT FROM 'string' THEN
        RETURN '/timestamp: expected an ISO 8601 string';
    END IF;
    IF NOT payload ? 'data' THEN
        RETURN '/: required property "data" is missing';
    END IF;

    -- One lookup: the type's current major and the latest minor of the requested major.
    SELECT e.current_major, v.schema, v.check_path INTO v_major, v_schema, v_check
      FROM whk.whk_02_eventos e
      LEFT JOIN LATERAL (SELECT x.schema, x.check_path
                           FROM whk.whk_02_eventos_versoes x
                          WHERE x.event_type_id = e.id AND x.major = coalesce(p_version, e.current_major)
                          ORDER BY x.minor DESC
                          LIMIT 1) v ON true
     WHERE e.name = p_type;
    IF NOT FOUND THEN
        RETURN format('/type: unknown event type "%s"', p_type);
    END IF;
    IF v_schema IS NULL THEN
        RETURN format('/type: "%s" has no version %s', p_type, coalesce(p_version, v_major));
    END IF;
    -- Fast path: the schema compiled to jsonpath (whk.jsonschema_predicate) says TRUE only for valid data,
    -- ~40x cheaper than the reference. Anything else (invalid, or unknown) goes to the reference, which
    -- decides and names the first error.
    IF v_check IS NOT NULL AND coalesce((payload -> 'data') @@ v_check, false) THEN
        RETURN NULL;
    END IF;
    RETURN whk.jsonschema_error(v_schema, payload -> 'data', '/data');
END;
$$;
COMMENT ON FUNCTION whk.validate_payload(text, integer, jsonb) IS
    'NULL when an event envelope matches the schema of its type/major, else the first error (JSON pointer: message).';
-- <<< sql/functions/contracts/validate_payload.sql

-- >>> sql/functions/delivery/ack_delivery.sql
-- The consumer confirms a delivery that answered 202 (awaiting_ack): it becomes delivered.
-- Idempotent: acking an already delivered row returns true and changes nothing.
CREATE OR REPLACE FUNCTION whk.ack_delivery(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'delivered', acked_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    WHERE d.id = p_id AND d.status = 'awaiting_ack';
    IF FOUND THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM whk.whk_03_entregas d WHERE d.id = p_id AND d.status = 'delivered');
END;
$$;
-- <<< sql/functions/delivery/ack_delivery.sql

-- >>> sql/functions/delivery/auto_disable_webhooks.sql
-- Disable webhooks that have failed without a single success for the configured window
-- ('delivery.auto_disable_after_s', default 5 days), through whk.disable_webhook (parks their deliveries
-- and emits whk.webhook.disabled). Returns how many were disabled.
CREATE OR REPLACE FUNCTION whk.auto_disable_webhooks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_window double precision := coalesce((whk.delivery_config('delivery.auto_disable_after_s') #>> '{}')::double precision,
                                          432000);
    v_id     bigint;
    v_count  integer := 0;
BEGIN
    FOR v_id IN
        SELECT r.webhook_id FROM whk.webhook_runtime r
        JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
        WHERE w.status = 'active' AND r.failing_since < clock_timestamp() - make_interval(secs => v_window)
          -- A quarantined webhook, or one waiting for its signing secret, makes no attempts: its streak
          -- does not age.
          AND w.quarantined_at IS NULL AND w.needs_secret_since IS NULL
    LOOP
        IF whk.disable_webhook(v_id, format('failing without a success for %s seconds', v_window), 'whk-dispatcher') THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/auto_disable_webhooks.sql

-- >>> sql/functions/delivery/bulk_retry_cancel.sql
-- whk.bulk_retry_cancel: stop a queued or running bulk retry. Waits for a batch in progress (it holds the
-- row), so once this returns no further delivery is re-queued by it; what earlier batches re-queued is
-- delivered as usual. Returns false when it had already finished (done, cancelled or failed).
CREATE OR REPLACE FUNCTION whk.bulk_retry_cancel(p_bulk_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH c AS (
        UPDATE whk.bulk_retries
           SET state = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE id = p_bulk_id AND state IN ('queued', 'running')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM c);
$$;
COMMENT ON FUNCTION whk.bulk_retry_cancel(bigint) IS
    'Cancel a queued or running bulk retry (false if already finished).';
-- <<< sql/functions/delivery/bulk_retry_cancel.sql

-- >>> sql/functions/delivery/bulk_retry_candidates.sql
-- whk.bulk_retry_candidates: the deliveries a bulk retry still has to handle, in id order after p_after —
-- its filters (tenant, webhook, event type, statuses, created range), never one in flight (its attempt is
-- running) nor one of a deleted webhook (nothing more is sent there). The one definition used both to
-- count the total at the start and to pick each batch, so the two agree. The id order serves the keyset.
CREATE OR REPLACE FUNCTION whk.bulk_retry_candidates(p_bulk_id bigint, p_after bigint, p_limit integer)
RETURNS SETOF bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT d.id
      FROM whk.bulk_retries r
      JOIN whk.whk_03_entregas d
        ON (r.consumer_id IS NULL OR d.consumer_id = r.consumer_id)
       AND (r.webhook_id IS NULL OR d.webhook_id = r.webhook_id)
       AND (r.event_type IS NULL OR d.event_type = r.event_type)
       AND (r.created_from IS NULL OR d.created_at >= r.created_from)
       AND (r.created_to IS NULL OR d.created_at < r.created_to)
       AND d.status = ANY (r.statuses) AND d.status <> 'in_flight'
     WHERE r.id = p_bulk_id AND d.id > coalesce(p_after, 0)
       AND NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
     ORDER BY d.id
     LIMIT p_limit;
$$;
COMMENT ON FUNCTION whk.bulk_retry_candidates(bigint, bigint, integer) IS
    'The deliveries a bulk retry still has to handle after a delivery id (its filters), in id order.';
-- <<< sql/functions/delivery/bulk_retry_candidates.sql

-- >>> sql/functions/delivery/bulk_retry_start.sql
-- whk.bulk_retry_start: record a bulk retry of the deliveries matching the filters and queue its job
-- (pgqueuer entrypoint `bulk_retry`, run by the job worker). total is counted now with the same
-- definition the batches use (whk.bulk_retry_candidates); a matching delivery that dies later is retried
-- too if the keyset has not passed it. SECURITY DEFINER only to queue the job: the callers' roles have no
-- rights on pgqueuer's table. Tenancy is the caller's business (the API passes the caller's consumer and
-- checks the webhook is its own). Returns the bulk retry's id.
CREATE OR REPLACE FUNCTION whk.bulk_retry_start(p_consumer_id bigint, p_webhook_id bigint, p_event_type text,
                                                p_statuses text[], p_created_from timestamptz,
                                                p_created_to timestamptz, p_created_by text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_created_from >= p_created_to THEN
        RAISE EXCEPTION 'empty created range [%, %)', p_created_from, p_created_to
            USING ERRCODE = 'invalid_parameter_value', HINT = 'created_from must be before created_to';
    END IF;
    IF p_statuses IS NULL OR cardinality(p_statuses) NOT BETWEEN 1 AND 6
       OR NOT p_statuses <@ ARRAY['pending', 'awaiting_ack', 'delivered', 'dead', 'parked', 'cancelled'] THEN
        RAISE EXCEPTION 'bad statuses %', p_statuses
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '1 to 6 of pending, awaiting_ack, delivered, dead, parked, cancelled';
    END IF;
    INSERT INTO whk.bulk_retries (consumer_id, webhook_id, event_type, statuses, created_from, created_to,
                                  created_by)
    VALUES (p_consumer_id, p_webhook_id, p_event_type, p_statuses, p_created_from, p_created_to, p_created_by)
    RETURNING id INTO v_id;
    UPDATE whk.bulk_retries
       SET total = (SELECT count(*) FROM whk.bulk_retry_candidates(v_id, NULL, NULL))
     WHERE id = v_id;
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status)
    VALUES (0, 'bulk_retry', convert_to(v_id::text, 'UTF8'), 'queued');
    RETURN v_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.bulk_retry_start(bigint, bigint, text, text[], timestamptz, timestamptz, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.bulk_retry_start(bigint, bigint, text, text[], timestamptz, timestamptz, text)
    TO whk_app, whk_dispatcher;
COMMENT ON FUNCTION whk.bulk_retry_start(bigint, bigint, text, text[], timestamptz, timestamptz, text) IS
    'Record a bulk retry of the deliveries matching the filters and queue its job; returns its id.';
-- <<< sql/functions/delivery/bulk_retry_start.sql

-- >>> sql/functions/delivery/bulk_retry_step.sql
-- whk.bulk_retry_step: one batch of a bulk retry (the job worker calls it until it returns false; a DBA
-- can too). The row is locked for the batch, so a cancel (whk.bulk_retry_cancel) waits for the running
-- batch and the next step sees it and stops. The next p_batch candidates after the keyset position go
-- through whk.retry_deliveries (same event_id, so the same webhook-id header; it skips those whose event
-- left the outbox or whose webhook was deleted meanwhile: counted as skipped). Returns true while there
-- may be more to do.
CREATE OR REPLACE FUNCTION whk.bulk_retry_step(p_bulk_id bigint, p_batch integer DEFAULT 1000)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_state    text;
    v_cursor   bigint;
    v_ids      bigint[];
    v_n        integer;
    v_requeued integer := 0;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 deliveries per step';
    END IF;
    SELECT r.state, r.cursor_id INTO v_state, v_cursor FROM whk.bulk_retries r WHERE r.id = p_bulk_id FOR UPDATE;
    IF NOT FOUND OR v_state NOT IN ('queued', 'running') THEN
        RETURN false;
    END IF;
    SELECT array_agg(c.id ORDER BY c.id) INTO v_ids
      FROM whk.bulk_retry_candidates(p_bulk_id, v_cursor, p_batch) AS c(id);
    v_n := coalesce(cardinality(v_ids), 0);
    IF v_n > 0 THEN
        v_requeued := whk.retry_deliveries(v_ids);
        IF v_requeued > 0 THEN
            PERFORM whk.wake_dispatchers();
        END IF;
    END IF;
    UPDATE whk.bulk_retries
       SET done = done + v_n, requeued = requeued + v_requeued, skipped = skipped + (v_n - v_requeued),
           total = greatest(total, done + v_n),
           cursor_id = coalesce(v_ids[v_n], cursor_id),
           state = CASE WHEN v_n < p_batch THEN 'done' ELSE 'running' END,
           finished_at = CASE WHEN v_n < p_batch THEN clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = p_bulk_id;
    RETURN v_n = p_batch;
END;
$$;
COMMENT ON FUNCTION whk.bulk_retry_step(bigint, integer) IS
    'One batch of a bulk retry: the next deliveries by id re-queued through whk.retry_deliveries.';
-- <<< sql/functions/delivery/bulk_retry_step.sql

-- >>> sql/functions/delivery/claim_deliveries.sql
-- Claim due deliveries for one dispatcher, fairly across webhooks, honouring every shared limit.
--
-- p_limit is the number of HTTP requests the caller can start now (a batch is one request). Webhooks with
-- due work are visited least-recently-served first; for each one the claim walks ITS OWN due index
-- (webhook_id, next_attempt_at, id) WHERE pending, so one endpoint's backlog of millions never delays
-- another endpoint's fresh event (a global FIFO would). The webhook's runtime row is locked SKIP LOCKED:
-- two dispatchers never claim for the same webhook at the same moment, so token buckets, in-flight caps
-- and half-open probes are exact across processes.
--
-- Per webhook the number of requests is the least of: what is left of p_limit, max_in_flight minus the
-- requests already in flight, the webhook's token bucket, the consumer's token bucket and daily quota,
-- and 1 for a half-open breaker (the probe). An open breaker claims nothing, so its deliveries wait
-- (they are not dead-lettered early).
--
-- Modes: immediate and delayed take due rows in (next_attempt_at, id) order; ordered takes only lane heads
-- (the lowest commit_seq of each key not yet delivered, dead or parked), so a retrying head blocks its own
-- key and nothing else; batch waits until batch_size rows are due or the oldest has waited batch_window_ms,
-- then claims up to batch_size rows under one batch_id.
--
-- Claimed rows become in_flight with a lease; an expired lease is reclaimed by whk.reclaim_expired_leases.
--
-- whk.route_and_take applies the same admission rules to fresh deliveries (and leaves to this claim what
-- needs its state: buckets, quotas, probes, lanes, partial batches); tests/db/test_admission_rules.py is
-- one table of cases that both functions answer.
--
-- p_finished (migration 0022): deliveries of p_dispatcher whose request has ended but whose outcome is not
-- recorded yet (the dispatcher writes outcomes in groups). They are still in_flight here, but no longer on
-- the wire, so the in-flight cap does not count them: max_in_flight limits concurrent requests, not the
-- bookkeeping behind them. (Measured before: a webhook at the default max_in_flight of 10 drained at ~600
-- events/s, its requests waiting for earlier outcomes to be written.) The dispatcher lists only SUCCESSFUL
-- requests: after a failure the webhook waits for it to be written, so the breaker and the failure streak
-- always see it before the next request. Lanes stay blocked until the outcome is recorded: a retry must
-- not be overtaken.
--
-- Only active webhooks of active consumers are served: a paused webhook's or a suspended consumer's
-- deliveries wait, pending; a disabled one's are parked (whk.disable_webhook, whk.set_consumer_status).
-- Inside the consumer's quiet hours (whk.quiet_until) only its urgent webhooks are served: the others'
-- deliveries wait, pending, spending no attempt, and are due again when the window ends (whk.next_wakeup).
--
-- Quarantined webhooks (whk_01_webhooks.quarantined_at, see whk.quarantine_webhook) are never claimed for:
-- one webhook whose data breaks this statement must not stop it for everyone. p_only (NULL = every webhook)
-- restricts the claim to those webhooks: whk.isolate_round_faults probes with it to find the culprit of a
-- failed round; the dispatcher's rounds never pass it.
-- p_now (NULL = clock_timestamp()): the moment the claim judges due times, leases, probes and buckets
-- by. Tests pass a later one instead of sleeping until something is due; the dispatcher never passes it.
CREATE OR REPLACE FUNCTION whk.claim_deliveries(p_dispatcher text, p_limit integer, p_lease_s double precision,
                                                p_finished bigint[] DEFAULT '{}', p_only bigint[] DEFAULT NULL,
                                                p_now timestamptz DEFAULT NULL)
RETURNS TABLE (delivery_id bigint, webhook_id bigint, event_id uuid, event_type text, attempts integer,
               schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz := coalesce(p_now, clock_timestamp());
    v_lease      timestamptz := v_now + make_interval(secs => p_lease_s);
    v_left       integer := p_limit;
    v_defaults   jsonb := coalesce(whk.delivery_config('rate_limit.webhook_default'), '{}'::jsonb);
    w            record;
    c            record;
    v_req        integer;
    v_in_flight  integer;
    v_num        numeric;
    v_rate       double precision;
    v_burst      double precision;
    v_tokens     double precision;
    v_ctokens    double precision;
    v_ids        bigint[];
    v_requests   integer;
    v_batch      uuid;
    v_due        integer;
    v_oldest     timestamptz;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;

    FOR w IN
        SELECT wh.id, wh.consumer_id, wh.delivery_mode, wh.batch_size, wh.batch_window_ms, wh.max_in_flight,
               wh.rate_limit_per_second, wh.rate_limit_burst, wh.urgent,
               r.breaker_state, r.probe_at, r.probe_until, r.tokens, r.tokens_at
        FROM whk.whk_01_webhooks wh
        JOIN whk.webhook_runtime r ON r.webhook_id = wh.id
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL AND wh.quarantined_at IS NULL
          -- Never unsigned: a webhook waiting for its signing secret keeps its deliveries pending.
          AND wh.needs_secret_since IS NULL
          AND (p_only IS NULL OR wh.id = ANY (p_only))
          -- One probe of the webhook's due index. OFFSET 0 keeps the EXISTS a per-webhook probe: flattened
          -- into a semi-join, the generic plan read every due delivery of every webhook and grouped them by
          -- webhook (measured in a 20,000-event drain: ~3 ms per claim, growing with the backlog).
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                      OFFSET 0)
        ORDER BY r.last_claim_at NULLS FIRST, wh.id
        FOR UPDATE OF r SKIP LOCKED
    LOOP
        EXIT WHEN v_left <= 0;

        -- The consumer's row (its status here, its token bucket and quota below). A suspended or disabled
        -- consumer is served nothing: its deliveries wait, pending (or parked by whk.set_consumer_status),
        -- until it is active again. Read first, so such a webhook costs one primary-key read per claim.
        SELECT a.status,
               CASE WHEN a.rate_limit_per_second IS NOT NULL
                    THEN least(greatest(a.rate_limit_per_second, 0.001), 1000000)::double precision END AS rate,
               a.rate_limit_burst::double precision AS burst,
               a.quota_deliveries_per_day AS quota, cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used,
               a.quiet_hours
        INTO c
        FROM whk.whk_04_assinantes a
        LEFT JOIN whk.consumer_runtime cr ON cr.consumer_id = a.id
        WHERE a.id = w.consumer_id;
        CONTINUE WHEN c.status <> 'active';
        CONTINUE WHEN c.quiet_hours IS NOT NULL AND NOT w.urgent
                      AND whk.quiet_until(c.quiet_hours, v_now) IS NOT NULL;

        -- Circuit breaker: open = nothing until probe_at, then exactly one probe (half-open).
        v_req := v_left;
        IF w.breaker_state = 'open' THEN
            CONTINUE WHEN w.probe_at > v_now;
            v_req := 1;
        ELSIF w.breaker_state = 'half_open' THEN
            CONTINUE WHEN w.probe_until > v_now;
            v_req := 1;
        END IF;

        -- In-flight cap, counted in requests (a batch in flight is one request), less the caller's finished
        -- ones (p_finished), found by primary key. (Until migration 0024 each in-flight row was compared with
        -- the whole array, `d.id <> ALL (p_finished)`: a parameter array is not hashed, so in-flight x
        -- finished comparisons; a claim with 1,000 in flight and 500 finished took 4.6 ms, now 3.1.) A
        -- batch's members finish together (one request), so the finished batches subtract exactly.
        SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
        INTO v_in_flight
        FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'in_flight';
        IF cardinality(p_finished) > 0 THEN
            SELECT v_in_flight - CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
            INTO v_in_flight
            FROM whk.whk_03_entregas d
            WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id AND d.status = 'in_flight'
              AND d.claimed_by = p_dispatcher;
        END IF;
        v_req := least(v_req, greatest(w.max_in_flight - v_in_flight, 0));
        CONTINUE WHEN v_req <= 0;

        -- Webhook token bucket (requests per second; burst defaults to one second's worth). The rate is
        -- clamped to its documented bounds (the CHECKs hold them too) while still numeric: a denormal rate
        -- does not even cast to double precision, and would underflow the bucket arithmetic if it did.
        v_num := coalesce(w.rate_limit_per_second, (v_defaults ->> 'per_second')::numeric);
        v_rate := CASE WHEN v_num IS NOT NULL THEN least(greatest(v_num, 0.001), 1000000)::double precision END;
        IF v_rate IS NOT NULL THEN
            v_burst := coalesce(w.rate_limit_burst::double precision, (v_defaults ->> 'burst')::double precision,
                                greatest(1.0, ceil(v_rate)));
            v_tokens := least(v_burst, coalesce(w.tokens, v_burst)
                                       + v_rate * greatest(extract(epoch FROM v_now - w.tokens_at), 0));
            v_req := least(v_req, floor(v_tokens)::integer);
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Consumer token bucket and daily quota, shared by all of the consumer's webhooks (its row was read
        -- at the top of the loop).
        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            INSERT INTO whk.consumer_runtime (consumer_id) VALUES (w.consumer_id)
            ON CONFLICT (consumer_id) DO NOTHING;
            SELECT cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
            INTO c.tokens, c.tokens_at, c.quota_day, c.quota_used
            FROM whk.consumer_runtime cr WHERE cr.consumer_id = w.consumer_id
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;  -- another dispatcher is charging this consumer right now
            IF c.rate IS NOT NULL THEN
                v_ctokens := least(coalesce(c.burst, greatest(1.0, ceil(c.rate))),
                                   coalesce(c.tokens, coalesce(c.burst, greatest(1.0, ceil(c.rate))))
                                   + c.rate * greatest(extract(epoch FROM v_now - c.tokens_at), 0));
                v_req := least(v_req, floor(v_ctokens)::integer);
            END IF;
            IF c.quota IS NOT NULL THEN
                -- least() in bigint before the cast: a quota above 2^31 must not overflow integer.
                v_req := least(v_req, greatest(c.quota - CASE WHEN c.quota_day = v_now::date
                                                              THEN c.quota_used ELSE 0 END, 0))::integer;
            END IF;
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Pick the rows (mode by mode), then claim them with one statement shared by every mode.
        v_batch := NULL;
        IF w.delivery_mode = 'batch' THEN
            SELECT count(*), min(s.next_attempt_at) INTO v_due, v_oldest
            FROM (SELECT d.next_attempt_at FROM whk.whk_03_entregas d
                  WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                  ORDER BY d.next_attempt_at, d.id
                  LIMIT w.batch_size) s;
            CONTINUE WHEN v_due < w.batch_size
                      AND v_oldest > v_now - make_interval(secs => w.batch_window_ms / 1000.0);
            v_batch := gen_random_uuid();
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT w.batch_size
                FOR UPDATE SKIP LOCKED) p;
        ELSIF w.delivery_mode = 'ordered' THEN
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                JOIN (SELECT DISTINCT ON (x.ordering_key) x.id, x.status, x.next_attempt_at
                      FROM whk.whk_03_entregas x
                      WHERE x.webhook_id = w.id AND x.status IN ('pending', 'in_flight', 'awaiting_ack')
                        AND x.ordering_key IS NOT NULL
                      ORDER BY x.ordering_key, x.commit_seq, x.id) h ON h.id = d.id
                WHERE h.status = 'pending' AND h.next_attempt_at <= v_now AND d.status = 'pending'
                ORDER BY h.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE OF d SKIP LOCKED) p;
        ELSE
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE SKIP LOCKED) p;
        END IF;
        CONTINUE WHEN v_ids IS NULL;

        RETURN QUERY
        WITH claimed AS (
            UPDATE whk.whk_03_entregas d
            SET status = 'in_flight', lease_until = v_lease, claimed_by = p_dispatcher, batch_id = v_batch,
                updated_at = v_now
            WHERE d.id = ANY (v_ids)
            RETURNING d.*
        )
        SELECT k.id, k.webhook_id, k.event_id, k.event_type, k.attempts, k.schedule_offset, k.batch_id,
               k.commit_seq, k.ordering_key, coalesce(k.payload, whk.event_envelope(o))::text  -- rendered for a pinned major
        FROM claimed k
        JOIN whk.outbox o ON o.id = k.outbox_id AND o.created_at = k.event_created_at;
        v_requests := CASE WHEN v_batch IS NOT NULL THEN 1 ELSE cardinality(v_ids) END;
        CONTINUE WHEN v_requests = 0;
        v_left := v_left - v_requests;

        UPDATE whk.webhook_runtime r
        SET last_claim_at = v_now,
            tokens = CASE WHEN v_rate IS NULL THEN NULL ELSE v_tokens - v_requests END,
            tokens_at = v_now,
            breaker_state = CASE WHEN r.breaker_state = 'open' THEN 'half_open' ELSE r.breaker_state END,
            probe_until = CASE WHEN r.breaker_state IN ('open', 'half_open') THEN v_lease ELSE r.probe_until END
        WHERE r.webhook_id = w.id;

        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            UPDATE whk.consumer_runtime cr
            SET tokens = CASE WHEN c.rate IS NULL THEN NULL ELSE v_ctokens - v_requests END,
                tokens_at = v_now,
                quota_used = CASE WHEN cr.quota_day = v_now::date THEN cr.quota_used ELSE 0 END + v_requests,
                quota_day = v_now::date
            WHERE cr.consumer_id = w.consumer_id;
        END IF;
    END LOOP;
END;
$$;
-- <<< sql/functions/delivery/claim_deliveries.sql

-- >>> sql/functions/delivery/clear_webhook_quarantine.sql
-- Lift a webhook's quarantine (whk.quarantine_webhook) once its data is fixed: the dispatcher claims for it
-- again, and its deliveries that waited pending are due at once (same event_id, so the same webhook-id;
-- their retry schedule restarts: a quarantine is not the endpoint's failure). If the cause is still there,
-- the next round quarantines it again. Status, breaker and parked deliveries are not touched.
-- The API audits the operator's request itself (POST /api/whk/webhooks/{id}/clear-quarantine).
-- Returns false when the webhook was not quarantined.
CREATE OR REPLACE FUNCTION whk.clear_webhook_quarantine(p_webhook_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET quarantined_at = NULL, quarantine_stage = NULL, quarantine_reason = NULL, quarantine_sqlstate = NULL,
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.quarantined_at IS NOT NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE whk.whk_03_entregas d
    SET next_attempt_at = clock_timestamp(), schedule_offset = d.attempts, updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    -- Time in quarantine is no failure of the endpoint: an unbroken failure streak restarts its
    -- auto-disable window now (whk.auto_disable_webhooks skips quarantined webhooks meanwhile).
    UPDATE whk.webhook_runtime r
    SET failing_since = clock_timestamp()
    WHERE r.webhook_id = p_webhook_id AND r.failing_since IS NOT NULL;
    PERFORM whk.wake_dispatchers();
    RETURN true;
END;
$$;
-- <<< sql/functions/delivery/clear_webhook_quarantine.sql

-- >>> sql/functions/delivery/delete_webhook.sql
-- Delete a webhook. A soft delete: the row stays, so its deliveries and attempt log keep their webhook for
-- history, but it is marked deleted (and disabled, reason 'deleted'), so routing and the claim ignore it
-- from now on. Its unfinished deliveries (pending, parked, awaiting_ack) are cancelled: nothing more is
-- sent to an endpoint its owner removed. Deliveries in flight finish their attempt and then end cancelled
-- unless it delivered them (whk.record_outcomes, whk.release_deliveries, whk.reclaim_expired_leases), and
-- whk.retry_deliveries never re-queues a deleted webhook's deliveries. Its signing secrets
-- are dropped at once (no grace period after a delete).
-- Returns deleted = false when it was deleted already (nothing changed), and how many deliveries were
-- cancelled.
CREATE OR REPLACE FUNCTION whk.delete_webhook(p_webhook_id bigint, OUT deleted boolean, OUT cancelled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_deleted_at timestamptz;
BEGIN
    SELECT w.deleted_at INTO v_deleted_at
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of an existing webhook: SELECT id, name, status FROM whk.whk_01_webhooks';
    END IF;
    deleted := v_deleted_at IS NULL;
    cancelled := 0;
    IF NOT deleted THEN
        RETURN;
    END IF;

    UPDATE whk.whk_01_webhooks w
    SET deleted_at = clock_timestamp(), status = 'disabled', disabled_reason = 'deleted',
        disabled_at = clock_timestamp(), updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id;

    UPDATE whk.whk_03_entregas d
    SET status = 'cancelled', updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status IN ('pending', 'parked', 'awaiting_ack');
    GET DIAGNOSTICS cancelled = ROW_COUNT;

    DELETE FROM whk.webhook_secrets s WHERE s.webhook_id = p_webhook_id;
END;
$$;
COMMENT ON FUNCTION whk.delete_webhook(bigint) IS
    'Soft-delete a webhook: unfinished deliveries cancelled, signing secrets dropped. Returns (deleted, cancelled).';
-- <<< sql/functions/delivery/delete_webhook.sql

-- >>> sql/functions/delivery/delivery_config.sql
-- One global setting from whk_05_configuracoes (NULL when absent). Delivery functions read their
-- defaults through this so a DBA can change the schedule, breaker or limits with a plain UPDATE.
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and is parsed and planned again at
-- every call, and the routing, claim and recording statements each call it once per round trip; PL/pgSQL
-- keeps the query's plan for the session.
CREATE OR REPLACE FUNCTION whk.delivery_config(p_key text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    RETURN (SELECT c.value FROM whk.whk_05_configuracoes c WHERE c.key = p_key);
END;
$$;
-- <<< sql/functions/delivery/delivery_config.sql

-- >>> sql/functions/delivery/disable_webhook.sql
-- Disable a webhook (410 Gone, auto-disable after an unbroken failure window, or an operator) and park its
-- unfinished deliveries: parked rows are kept, not lost, and come back with whk.resume_webhook.
-- Emits a `whk.webhook.disabled` event into the outbox (delivered like any other event to webhooks that
-- subscribe to it, and a durable record of who/why/when) and records the reason on the webhook row.
-- p_actor set (the dispatcher: 410, auto-disable) also writes the audit trail (whk.audit_log, created by
-- the API migration; looked up at run time so this function does not depend on it). The API passes no
-- actor: it audits the operator's request itself, in the same transaction.
-- Returns false when the webhook was already disabled (nothing changed, no duplicate event).
CREATE OR REPLACE FUNCTION whk.disable_webhook(p_webhook_id bigint, p_reason text, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_before text;
    v_parked integer;
BEGIN
    SELECT w.status INTO v_before FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id FOR UPDATE;
    UPDATE whk.whk_01_webhooks w
    SET status = 'disabled', disabled_reason = p_reason, disabled_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.status <> 'disabled'
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- In-flight rows finish their attempt; if it fails they return to pending, which a disabled webhook
    -- never claims (whk.claim_deliveries) until whk.resume_webhook.
    UPDATE whk.whk_03_entregas d
    SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    -- Only the data is stored; whk.event_envelope builds the delivered body (timestamp = transaction time).
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.disabled', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id,
                               'name', v_hook.name, 'url', v_hook.url, 'reason', p_reason,
                               'parked_deliveries', v_parked,
                               'actor', coalesce(p_actor, current_user)),
            'EMIT');
    PERFORM whk.wake_dispatchers();

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.disabled'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('status', v_before),
              jsonb_build_object('status', 'disabled', 'disabled_reason', p_reason, 'parked_deliveries', v_parked);
    END IF;
    RETURN true;
END;
$$;
-- <<< sql/functions/delivery/disable_webhook.sql

-- >>> sql/functions/delivery/dispatch_round.sql
-- One dispatcher round trip: route new outbox events (whk.route_and_take, which may hand fresh deliveries
-- over already in flight) and claim due deliveries
-- (whk.claim_deliveries) in the same transaction, so an event committed a moment ago is routed and
-- claimed by one call (commit -> request in one round trip). Returns the claimed rows, each carrying
-- the number of events routed and `more_due`: whether due deliveries are still waiting after the claim
-- (held back by caps, lanes, rate limits or the caller's free slots). When nothing is due, a freed slot or
-- a recorded outcome cannot make anything claimable, so the dispatcher does not spend a round on it.
-- The last row carries only `routed` and `more_due` (no delivery).
-- p_finished: the caller's deliveries whose request has ended but whose outcome is not recorded yet; the
-- in-flight caps do not count them (whk.claim_deliveries, migration 0022).
CREATE OR REPLACE FUNCTION whk.dispatch_round(p_dispatcher text, p_route_limit integer, p_claim_limit integer,
                                              p_lease_s double precision, p_finished bigint[] DEFAULT '{}')
RETURNS TABLE (routed integer, more_due boolean, delivery_id bigint, webhook_id bigint, event_id uuid,
               event_type text, attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint,
               ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_routed integer := 0;
    v_taken  integer := 0;  -- requests taken: a batch is one
    v_seen   uuid[] := '{}';
    v_more   boolean;
    v_pass   integer;
    t        record;
BEGIN
    -- Fresh deliveries of unconstrained immediate webhooks come back already in flight (whk.route_and_take).
    FOR t IN SELECT * FROM whk.route_and_take(p_route_limit, p_dispatcher, p_claim_limit, p_lease_s, p_finished)
    LOOP
        v_routed := t.routed;
        CONTINUE WHEN t.delivery_id IS NULL;
        IF t.batch_id IS NULL THEN
            v_taken := v_taken + 1;
        ELSIF NOT t.batch_id = ANY (v_seen) THEN
            v_taken := v_taken + 1;
            v_seen := v_seen || t.batch_id;
        END IF;
        routed := t.routed; more_due := NULL; delivery_id := t.delivery_id; webhook_id := t.webhook_id;
        event_id := t.event_id; event_type := t.event_type; attempts := t.attempts;
        schedule_offset := t.schedule_offset; batch_id := t.batch_id; commit_seq := t.commit_seq;
        ordering_key := t.ordering_key; payload := t.payload;
        RETURN NEXT;
    END LOOP;

    -- The claim only when due work exists (one probe of each active, unquarantined webhook's due index, the
    -- claim's own index): in the steady state route_and_take has taken every fresh delivery and the claim, a statement
    -- of its own, would find nothing. After a claim the probe runs again for `more_due`.
    FOR v_pass IN 1 .. 2 LOOP
        SELECT EXISTS (
            SELECT 1 FROM whk.whk_01_webhooks wh
            WHERE wh.status = 'active' AND wh.deleted_at IS NULL AND wh.quarantined_at IS NULL
              AND wh.needs_secret_since IS NULL
              -- OFFSET 0: a probe per webhook, never a semi-join over every due delivery (whk.claim_deliveries).
              AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                          WHERE d.webhook_id = wh.id AND d.status = 'pending'
                            AND d.next_attempt_at <= clock_timestamp()
                          OFFSET 0)
              -- A suspended or disabled consumer's due deliveries wait for it, not for a round (the claim
              -- skips them): counted here they would make every round ask for another at once.
              -- Likewise a consumer's non-urgent deliveries inside its quiet hours (whk.quiet_until).
              AND EXISTS (SELECT 1 FROM whk.whk_04_assinantes a
                          WHERE a.id = wh.consumer_id AND a.status = 'active'
                            AND (a.quiet_hours IS NULL OR wh.urgent
                                 OR whk.quiet_until(a.quiet_hours, clock_timestamp()) IS NULL)))
        INTO v_more;
        EXIT WHEN NOT v_more OR v_pass = 2;
        RETURN QUERY
        SELECT v_routed, NULL::boolean, c.delivery_id, c.webhook_id, c.event_id, c.event_type, c.attempts,
               c.schedule_offset, c.batch_id, c.commit_seq, c.ordering_key, c.payload
        FROM whk.claim_deliveries(p_dispatcher, p_claim_limit - v_taken, p_lease_s, p_finished) c;
    END LOOP;
    -- The flag travels on its own row (no delivery): a client reads it from the row without delivery_id.
    RETURN QUERY SELECT v_routed, v_more, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                        NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
END;
$$;
-- <<< sql/functions/delivery/dispatch_round.sql

-- >>> sql/functions/delivery/effective_retry_policy.sql
-- A webhook's retry policy as it is applied: the global 'retry.policy' (whk_05_configuracoes) with the
-- webhook's own retry_policy laid over it member by member. This is the one source of the retry schedule:
-- the dispatcher loads it with each webhook (dispatcher/queries.sql, webhooks) and whk.expire_acks counts
-- its steps, so a DBA's UPDATE of the setting changes both. Without the setting and without an override
-- there is no schedule: the first failure is final, for both alike.
CREATE OR REPLACE FUNCTION whk.effective_retry_policy(p_override jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    RETURN coalesce(whk.delivery_config('retry.policy'), '{}'::jsonb) || coalesce(p_override, '{}'::jsonb);
END;
$$;
-- <<< sql/functions/delivery/effective_retry_policy.sql

-- >>> sql/functions/delivery/enqueue_secret_provisioning.sql
-- Queue the job that gives a webhook its signing secret (pgqueuer entrypoint 'provision_secret', payload =
-- the webhook id as text), in the caller's transaction. Secrets are encrypted with the application's key
-- (WHK_SECRET_KEYS), which the database never has, so SQL cannot make one: the job worker does, exactly as
-- the API does. SECURITY DEFINER: a trigger of any role (a DBA's INSERT, the ERP's) reaches pgqueuer's table
-- only through here. One job per webhook at a time (dedupe key, the unique index's predicate restated as
-- ON CONFLICT requires); a webhook that has a secret again, or is deleted, gets none. Returns the job id, or
-- NULL when none was queued.
CREATE OR REPLACE FUNCTION whk.enqueue_secret_provisioning(p_webhook_id bigint)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
    SELECT 10, 'provision_secret', convert_to(w.id::text, 'UTF8'), 'queued', 'provision_secret:' || w.id
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id AND w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL
    ON CONFLICT (dedupe_key) WHERE (status IN ('queued', 'picked') AND dedupe_key IS NOT NULL) DO NOTHING
    RETURNING id
$$;
COMMENT ON FUNCTION whk.enqueue_secret_provisioning(bigint) IS
    'Queue the job worker''s provision_secret job for a webhook waiting for a signing secret (once per webhook).';
REVOKE EXECUTE ON FUNCTION whk.enqueue_secret_provisioning(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.enqueue_secret_provisioning(bigint) TO whk_app, whk_dispatcher;
-- <<< sql/functions/delivery/enqueue_secret_provisioning.sql

-- >>> sql/functions/delivery/ensure_webhook_runtime.sql
-- Every webhook gets its runtime row (breaker, token bucket) before the claim needs to lock it. The
-- router creates rows for webhooks it fans out to; this catches deliveries created any other way.
CREATE OR REPLACE FUNCTION whk.ensure_webhook_runtime()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT w.id FROM whk.whk_01_webhooks w
    WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime r WHERE r.webhook_id = w.id)
    ON CONFLICT (webhook_id) DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/ensure_webhook_runtime.sql

-- >>> sql/functions/delivery/event_type_matches.sql
-- Does an event type match a webhook's subscriptions? Patterns are exact names, '*' or a prefix wildcard
-- such as 'order.*' (matches 'order.created' and 'order.line.added', never 'order').
-- '*' means every business event: the platform's own events (system.*, whk.*) are delivered only to
-- webhooks that name them ('system.*', 'whk.webhook.disabled'), so a catch-all subscriber is not sent
-- a dispatcher restart as if it were an ERP change.
-- PL/pgSQL on purpose (migration 0010): the SQL version could not be inlined (its EXISTS is a sublink), and
-- a non-inlined SQL function is parsed and planned again in every statement that calls it (≈ 0.5 ms per
-- routing round); PL/pgSQL keeps no query plan here at all, it only evaluates expressions.
CREATE OR REPLACE FUNCTION whk.event_type_matches(p_patterns text[], p_type text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
DECLARE
    v_pattern text;
BEGIN
    IF p_type = ANY (p_patterns) THEN
        RETURN true;
    END IF;
    IF '*' = ANY (p_patterns) AND NOT starts_with(p_type, 'system.') AND NOT starts_with(p_type, 'whk.') THEN
        RETURN true;
    END IF;
    FOREACH v_pattern IN ARRAY coalesce(p_patterns, '{}') LOOP
        IF right(v_pattern, 2) = '.*' AND starts_with(p_type, left(v_pattern, -1)) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END;
$$;
-- <<< sql/functions/delivery/event_type_matches.sql

-- >>> sql/functions/delivery/expire_acks.sql
-- Deliveries whose consumer did not confirm (202 then no ack) before ack_deadline are retried, counting
-- the unconfirmed attempt; once the retry schedule is used up they become dead letters instead.
-- The schedule is the one the dispatcher applies (whk.effective_retry_policy).
-- p_now (NULL = clock_timestamp()): tests pass a later moment instead of waiting for a deadline.
CREATE OR REPLACE FUNCTION whk.expire_acks(p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN 'dead' ELSE 'pending' END,
        dead_at = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len THEN v_now END,
        dead_reason = CASE WHEN d.attempts - d.schedule_offset > x.schedule_len
                           THEN 'ack timeout after the last attempt' END,
        last_error = 'ack timeout',
        next_attempt_at = v_now, ack_deadline = NULL, updated_at = v_now
    FROM (
        SELECT w.id,
               jsonb_array_length(coalesce(whk.effective_retry_policy(w.retry_policy) -> 'schedule_s',
                                           '[]'::jsonb)) AS schedule_len
        FROM whk.whk_01_webhooks w
    ) x
    WHERE d.status = 'awaiting_ack' AND d.ack_deadline < v_now AND x.id = d.webhook_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/expire_acks.sql

-- >>> sql/functions/delivery/explain.sql
-- whk.explain: what one ERP statement would make WHK send, without sending anything. The statement runs
-- inside a subtransaction (a BEGIN ... EXCEPTION block) that always ends by raising, so everything it did
-- is rolled back: ERP rows, outbox rows, NOTIFYs, queued jobs. Before the rollback the outbox rows its
-- capture triggers (and bindings calling whk.emit) wrote are kept in a variable; deferred triggers are made
-- to fire first (SET CONSTRAINTS ALL IMMEDIATE, undone by the rollback too) so events written at commit
-- are seen. Then every event is matched against every webhook with routing's own rules
-- (whk.event_type_matches, whk.route_target_open, whk.route_payload_matches), one row per (event, webhook):
--   routed   a delivery would be created (false: `reason` says which rule excludes it)
--   reason   why not routed, or why a routed delivery would wait or go out otherwise (parked: its body
--            cannot be rendered for the webhook's pinned major; paused, suspended consumer, waiting for a
--            signing secret, quarantined, delayed (and supersedable), the consumer's quiet hours, batched);
--            NULL = sent at once.
--            Limits the claim applies when sending (rate limits, the breaker, the in-flight cap) are not
--            evaluated: they depend on the moment, not on the event.
--   method, url, headers, body: the request of a routed delivery (the body rendered for a pinned major;
--            headers: webhook-id, webhook-timestamp
--            and the webhook's own headers; Content-Type, User-Agent and the outbound auth header, whose
--            credential is encrypted, are added by whoever sends it)
--   signature always NULL here: signing needs the webhook's secret, encrypted with a key only the
--            application holds (WHK_SECRET_KEYS). `whk explain "..."` (the CLI) fills it, building the
--            request with the dispatcher's own code.
-- An event no webhook exists for gives one row with webhook_id NULL.
--
-- Refused with a HINT, before anything runs: anything but ONE INSERT, UPDATE, DELETE or MERGE (DDL,
-- transaction control, utility commands, several statements), and a statement that reads or writes a
-- table, view or function of schema whk (directly, through a view, a rule or a sub-query). How: the
-- statement is planned (EXPLAIN (VERBOSE, FORMAT JSON), which parses but does not execute) through a
-- cursor, which PostgreSQL refuses to open on more than one statement, so `UPDATE ...; DROP ...` never
-- reaches execution; EXPLAIN accepts no DDL or transaction control; every plan must be a ModifyTable; every
-- relation or set-returning function scanned must be outside schema whk; and no whk function may be
-- called (the VERBOSE plan names functions of schemas not on the search_path, and the statement is
-- planned and run with whk removed from it; a string constant that looks like `whk.f(` is refused too).
-- What functions the statement calls do inside is not inspected: it runs, and is rolled back.
--
-- Not undone by the rollback (PostgreSQL does not roll these back): sequence values (ERP identity columns,
-- the outbox id: gaps are expected), session advisory locks and work done outside the database (dblink)
-- by functions the statement calls.
--
-- Runs with the caller's rights (no SECURITY DEFINER): the caller needs the privileges the statement needs
-- and read access to WHK's tables, i.e. a DBA. No SET search_path clause: the statement is the caller's and
-- resolves its names through the caller's search_path (minus whk); every name here is schema-qualified.
CREATE OR REPLACE FUNCTION whk.explain(statement text)
RETURNS TABLE (event_id uuid, event_type text, event_version integer, event_key text, webhook_id bigint,
               webhook_name text, consumer_id bigint, routed boolean, reason text, method text, url text,
               headers jsonb, body text, signature text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_path   text := pg_catalog.current_setting('search_path');
    v_plan   jsonb;
    v_row    record;
    v_bad    text;
    v_before bigint[];
    v_events jsonb;  -- the captured outbox rows (a whk.outbox[] variable: pglast cannot check it)
    v_ts     bigint := pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()));
    c_hint   CONSTANT text := 'whk.explain runs ONE INSERT, UPDATE, DELETE or MERGE on ERP tables, e.g. '
                              'SELECT * FROM whk.explain($q$UPDATE erp.orders SET status = ''paid'' WHERE id = 42$q$)';
BEGIN
    IF statement IS NULL OR pg_catalog.btrim(statement) = '' THEN
        RAISE EXCEPTION 'whk.explain needs a statement' USING ERRCODE = 'invalid_parameter_value', HINT = c_hint;
    END IF;
    -- Plan and run without whk on the search_path: whk objects must be named, and then they are refused.
    PERFORM pg_catalog.set_config('search_path', coalesce((
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s), ', ' ORDER BY n)
        FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS c(s, n)
        WHERE s <> 'whk'), ''), true);

    BEGIN
        FOR v_row IN EXECUTE E'EXPLAIN (VERBOSE, FORMAT JSON)\n' || statement LOOP
            v_plan := v_row."QUERY PLAN";
        END LOOP;
    EXCEPTION
        WHEN syntax_error OR invalid_cursor_definition THEN
            RAISE EXCEPTION 'whk.explain refuses this statement: %', SQLERRM
                USING ERRCODE = 'feature_not_supported', HINT = c_hint;
    END;
    SELECT pg_catalog.string_agg(DISTINCT p -> 'Plan' ->> 'Node Type', ', ') INTO v_bad
      FROM pg_catalog.jsonb_array_elements(v_plan) AS p
     WHERE p -> 'Plan' ->> 'Node Type' IS DISTINCT FROM 'ModifyTable';
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'whk.explain refuses a statement that is not an INSERT, UPDATE, DELETE or MERGE (plan: %)', v_bad
            USING ERRCODE = 'feature_not_supported', HINT = c_hint;
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT coalesce(n ->> 'Relation Name', n ->> 'Function Name'), ', ') INTO v_bad
      FROM pg_catalog.jsonb_path_query(v_plan, 'lax $.**') AS n
     WHERE pg_catalog.jsonb_typeof(n) = 'object' AND n ->> 'Schema' = 'whk';
    IF v_bad IS NULL AND v_plan::text ~ '\mwhk\.[a-z_0-9]+\(' THEN
        v_bad := pg_catalog.substring(v_plan::text, '\m(whk\.[a-z_0-9]+)\(');
    END IF;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'whk.explain refuses a statement that touches WHK''s own schema (%)', v_bad
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'explain a statement on ERP tables; WHK''s tables and functions change through its SQL '
                         'functions and API, not through whk.explain';
    END IF;

    -- Outbox rows of this transaction are told apart by txid (the top-level transaction, also inside a
    -- subtransaction) and created_at (the transaction's start, which also prunes partitions); rows the
    -- caller's transaction wrote before this call are remembered and left out.
    v_before := ARRAY(SELECT o.id FROM whk.outbox o
                      WHERE o.txid = pg_catalog.pg_current_xact_id_if_assigned() AND o.created_at = pg_catalog.now());
    BEGIN
        EXECUTE statement;
        SET CONSTRAINTS ALL IMMEDIATE;
        SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o) ORDER BY o.id) INTO v_events
          FROM whk.outbox o
         WHERE o.txid = pg_catalog.pg_current_xact_id() AND o.created_at = pg_catalog.now()
           AND o.id <> ALL (v_before);
        RAISE EXCEPTION 'whk.explain rolls back' USING ERRCODE = 'WHKRB';
    EXCEPTION
        WHEN SQLSTATE 'WHKRB' THEN
            NULL;  -- the subtransaction, and everything the statement did, is gone; v_events remains
    END;
    PERFORM pg_catalog.set_config('search_path', v_path, true);

    RETURN QUERY
    SELECT e.event_id, e.event_type, e.event_version, e.event_key, w.id, w.name, w.consumer_id,
           m.miss IS NULL,
           coalesce(m.miss, CASE
               WHEN x.problem IS NOT NULL THEN pg_catalog.format('parked: %s', x.problem)
               WHEN w.status = 'paused' THEN 'held: the webhook is paused (sent once it is resumed)'
               WHEN a.status = 'suspended' THEN 'held: the consumer is suspended (sent once it is active again)'
               WHEN w.needs_secret_since IS NOT NULL THEN 'held: the webhook waits for a signing secret'
               WHEN w.quarantined_at IS NOT NULL
                   THEN pg_catalog.format('held: the webhook is quarantined (%s): %s', w.quarantine_stage,
                                          w.quarantine_reason)
               WHEN w.delay_seconds > 0 OR e.deliver_at > pg_catalog.clock_timestamp()
                   THEN pg_catalog.format('delayed: due at %s%s', GREATEST(pg_catalog.clock_timestamp(),
                            coalesce(e.deliver_at, e.created_at) + pg_catalog.make_interval(secs => w.delay_seconds)),
                            CASE WHEN w.supersede_by_key
                                 THEN ' (a newer event of the same key before then supersedes it)' END)
               WHEN a.quiet_hours IS NOT NULL AND NOT w.urgent
                    AND whk.quiet_until(a.quiet_hours, pg_catalog.clock_timestamp()) IS NOT NULL
                   THEN pg_catalog.format('held: the consumer''s quiet hours, until %s',
                                          whk.quiet_until(a.quiet_hours, pg_catalog.clock_timestamp()))
               WHEN w.delivery_mode = 'batch'
                   THEN pg_catalog.format('batched: sent in a JSON array of up to %s events (window %s ms), '
                                          'webhook-id batch_<id>', w.batch_size, w.batch_window_ms)
           END),
           CASE WHEN m.miss IS NULL THEN w.http_method END,
           CASE WHEN m.miss IS NULL THEN w.url END,
           CASE WHEN m.miss IS NULL THEN
               w.headers || pg_catalog.jsonb_build_object(
                   'webhook-id', 'msg_' || pg_catalog.replace(e.event_id::text, '-', ''),
                   'webhook-timestamp', v_ts::text)
           END,
           CASE WHEN m.miss IS NULL AND x.problem IS NULL THEN coalesce(x.body, e.envelope)::text END,
           NULL::text
    FROM (SELECT (r.o).*, whk.event_envelope(r.o) AS envelope, r.n
          FROM (SELECT pg_catalog.jsonb_populate_record(NULL::whk.outbox, j.value) AS o, j.n
                FROM pg_catalog.jsonb_array_elements(v_events) WITH ORDINALITY AS j(value, n)) r) e
    LEFT JOIN (whk.whk_01_webhooks w JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id)
           ON w.deleted_at IS NULL
    -- The body a pinned webhook would get (rendered to its major), as routing renders it.
    LEFT JOIN LATERAL (SELECT g.body, g.problem
                       FROM whk.render_event(e.envelope, e.event_type, e.event_version, w.payload_version) g
                       WHERE w.payload_version IS NOT NULL
                       OFFSET 0) x ON true
    CROSS JOIN LATERAL (SELECT CASE
        WHEN w.id IS NULL THEN 'no webhook is configured'
        WHEN NOT whk.route_target_open(w.status, w.deleted_at, w.quarantine_stage, a.status) THEN
            CASE WHEN w.status NOT IN ('active', 'paused')
                     THEN pg_catalog.format('the webhook is %s%s', w.status, ': ' || w.disabled_reason)
                 WHEN a.status NOT IN ('active', 'suspended')
                     THEN pg_catalog.format('its consumer %s is %s', a.id, a.status)
                 ELSE pg_catalog.format('the webhook is quarantined: its data broke routing (%s)',
                                        w.quarantine_reason) END
        WHEN NOT whk.event_type_matches(w.event_types, e.event_type) THEN
            pg_catalog.format('event type %s is not among its event types %s', e.event_type, w.event_types)
        WHEN NOT whk.route_payload_matches(w.filter, coalesce(x.body, e.envelope), x.problem) THEN
            pg_catalog.format('its filter %s is not true for this event', w.filter)
    END AS miss) m
    ORDER BY e.n, w.id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.explain(text) FROM PUBLIC;
COMMENT ON FUNCTION whk.explain(text) IS
    'Run one ERP INSERT/UPDATE/DELETE/MERGE in a savepoint that is always rolled back and return the events it '
    'would emit, per webhook: routed or why not, and the request (method, url, headers, body). The signature '
    'column is NULL here and filled by the CLI (whk explain) or API, which hold the key: the webhook secret is '
    'encrypted at rest. Refuses DDL, transaction control, several statements and anything touching schema whk.';
-- <<< sql/functions/delivery/explain.sql

-- >>> sql/functions/delivery/fault_probe.sql
-- Run one stage of a dispatcher round restricted to some webhooks, then undo it: the error it raised (its
-- SQLSTATE and message), or no row when it ran cleanly. whk.isolate_round_faults bisects with it.
--
-- p_stage 'route' runs whk.route_and_take, 'claim' runs whk.route_and_take then whk.claim_deliveries, as a
-- round does (the claim may fail on deliveries routed a moment before, in the same round), and
-- 'claim_alone' only the claim (when routing itself fails for no webhook in particular), each with
-- p_only = p_ids: the real statements, so a probe exercises exactly what failed. Whatever the probe did (routed, claimed,
-- locked) is rolled back by raising WHK00 inside its own block (a subtransaction).
--
-- Only errors that data can cause are caught and returned, the classes a webhook's row can provoke:
-- 22 data exception (out of range, underflow, invalid text representation), 23 integrity constraint,
-- 2F SQL routine, 38/39 external routine, P0 PL/pgSQL (RAISE, ASSERT), 54 program limit (stack depth,
-- statement too complex), XX internal (corrupt data). Anything else (a lost connection, a statement
-- timeout, a missing function after a bad deploy, a lock timeout) is not about one webhook: it propagates.
CREATE OR REPLACE FUNCTION whk.fault_probe(p_stage text, p_dispatcher text, p_route_limit integer,
                                           p_lease_s double precision, p_ids bigint[])
RETURNS TABLE (error_state text, error_message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_state text;
    v_msg   text;
BEGIN
    IF p_stage IS NULL OR p_stage NOT IN ('route', 'claim', 'claim_alone') THEN
        RAISE EXCEPTION 'unknown probe stage %', coalesce(p_stage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use route, claim or claim_alone';
    END IF;
    BEGIN
        IF p_stage = 'route' THEN
            PERFORM count(*) FROM whk.route_and_take(p_route_limit, p_dispatcher, 1000, p_lease_s, '{}', p_ids);
        ELSE
            IF p_stage = 'claim' THEN
                PERFORM count(*) FROM whk.route_and_take(p_route_limit, p_dispatcher, 1000, p_lease_s, '{}', p_ids);
            END IF;
            PERFORM count(*) FROM whk.claim_deliveries(p_dispatcher, 100000, p_lease_s, '{}', p_ids);
        END IF;
        RAISE EXCEPTION 'probe done: undo it' USING ERRCODE = 'WHK00';
    EXCEPTION
        WHEN SQLSTATE 'WHK00' THEN
            RETURN;
        WHEN data_exception OR integrity_constraint_violation OR sql_routine_exception
             OR external_routine_exception OR external_routine_invocation_exception OR plpgsql_error
             OR program_limit_exceeded OR internal_error THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            error_state := v_state;
            error_message := v_msg;
            RETURN NEXT;
    END;
END;
$$;
-- <<< sql/functions/delivery/fault_probe.sql

-- >>> sql/functions/delivery/isolate_round_faults.sql
-- Find and quarantine the webhooks whose data makes a dispatcher round fail, so the next round serves
-- everyone else. The dispatcher calls it only after whk.dispatch_round failed with an error a webhook's
-- data can cause (see whk.fault_probe for the classes): the happy path never pays for it.
--
-- For each stage (route, then claim) it probes the stage with every candidate webhook (whk.fault_probe,
-- rolled back). If that fails, it probes with none: a failure then is not about a webhook (an event, the
-- global configuration) and is reported with webhook_id NULL. Otherwise it bisects the candidates, probing
-- halves of a failing set, down to single webhooks: O(k log n) probes for k culprits among n candidates.
-- Candidates: for route, active webhooks not quarantined at that stage; for claim, active unquarantined
-- webhooks (a claim probe routes first, as the round did: the deliveries that broke the claim may have
-- been routed in the failed round itself, and rolled back with it).
--
-- When routing fails for no webhook in particular (a poison event), the claim is probed alone, so that the
-- routing fault is not blamed on the claim: the dispatcher then keeps claiming while routing is off.
--
-- Culprits are quarantined (whk.quarantine_webhook, stage and SQLSTATE recorded, audited as
-- 'whk-dispatcher:<id>'), EXCEPT when every candidate of a stage (two or more) fails on its own: that is
-- a global fault (for example a poison global default), reported with webhook_id NULL and nothing
-- quarantined. (All of one consumer's webhooks failing on a poison consumer setting looks the same while
-- they are the only candidates; they are quarantined as soon as any other webhook passes the probe.)
-- A failing set whose halves both pass (a fault of the combination) is reported unattributed too.
--
-- Returns one row per culprit (webhook_id, stage, sqlstate, message) and one row per stage that failed
-- without a culprit (webhook_id NULL). No row: the round's error did not reproduce.
CREATE OR REPLACE FUNCTION whk.isolate_round_faults(p_dispatcher text, p_route_limit integer,
                                                    p_lease_s double precision)
RETURNS TABLE (webhook_id bigint, stage text, sqlstate text, message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
#variable_conflict use_column
DECLARE
    v_stage  text;
    v_all    bigint[];
    v_set    bigint[];
    v_half   bigint[];
    v_queue  jsonb;
    v_item   jsonb;
    v_found  jsonb;
    v_n      integer;
    v_h      integer;
    p        record;
    q        record;
    v_any    boolean;
    v_probe  text;
    v_routes boolean := true;  -- routing fails for no webhook in particular: probe the claim alone
BEGIN
    FOREACH v_stage IN ARRAY ARRAY['route', 'claim'] LOOP
        IF v_stage = 'route' THEN
            SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_all
            FROM whk.whk_01_webhooks w
            WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantine_stage IS DISTINCT FROM 'route';
        ELSE
            SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_all
            FROM whk.whk_01_webhooks w
            WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL;
        END IF;

        v_probe := CASE WHEN v_stage = 'claim' AND NOT v_routes THEN 'claim_alone' ELSE v_stage END;
        SELECT * INTO p FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, v_all);
        CONTINUE WHEN NOT FOUND;  -- this stage runs cleanly
        SELECT * INTO q FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, '{}');
        IF FOUND THEN
            -- Fails with no webhook at all: not a webhook's fault.
            v_routes := v_routes AND v_stage <> 'route';
            RETURN QUERY SELECT NULL::bigint, v_stage, q.error_state, q.error_message;
            CONTINUE;
        END IF;

        -- Bisect: the queue holds failing sets with their error; single webhooks found are the culprits.
        v_queue := jsonb_build_array(jsonb_build_object('ids', to_jsonb(v_all), 'state', p.error_state,
                                                        'msg', p.error_message));
        v_found := '[]';
        WHILE jsonb_array_length(v_queue) > 0 LOOP
            v_item := v_queue -> 0;
            v_queue := v_queue - 0;
            v_set := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'ids')::bigint);
            v_n := cardinality(v_set);
            IF v_n = 1 THEN
                v_found := v_found || jsonb_build_array(v_item);
                CONTINUE;
            END IF;
            v_any := false;
            FOR v_h IN 1 .. 2 LOOP
                v_half := CASE WHEN v_h = 1 THEN v_set[1 : v_n / 2] ELSE v_set[v_n / 2 + 1 : v_n] END;
                SELECT * INTO q FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, v_half);
                IF FOUND THEN
                    v_any := true;
                    v_queue := v_queue || jsonb_build_array(jsonb_build_object(
                        'ids', to_jsonb(v_half), 'state', q.error_state, 'msg', q.error_message));
                END IF;
            END LOOP;
            IF NOT v_any THEN
                -- Fails only as a whole: a fault of the combination, not of one webhook.
                v_routes := v_routes AND v_stage <> 'route';
                RETURN QUERY SELECT NULL::bigint, v_stage, v_item ->> 'state', v_item ->> 'msg';
            END IF;
        END LOOP;

        IF jsonb_array_length(v_found) = cardinality(v_all) AND cardinality(v_all) >= 2 THEN
            -- Every candidate fails on its own: a global fault, not theirs.
            v_routes := v_routes AND v_stage <> 'route';
            RETURN QUERY SELECT NULL::bigint, v_stage, p.error_state, p.error_message;
            CONTINUE;
        END IF;
        FOR v_item IN SELECT e FROM jsonb_array_elements(v_found) e LOOP
            PERFORM whk.quarantine_webhook((v_item -> 'ids' ->> 0)::bigint, v_stage, v_item ->> 'msg',
                                           v_item ->> 'state', 'whk-dispatcher:' || p_dispatcher);
            RETURN QUERY SELECT (v_item -> 'ids' ->> 0)::bigint, v_stage, v_item ->> 'state', v_item ->> 'msg';
        END LOOP;
    END LOOP;
END;
$$;
-- <<< sql/functions/delivery/isolate_round_faults.sql

-- >>> sql/functions/delivery/next_wakeup.sql
-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- Quarantined webhooks and those of a consumer that is not active wait for an operator, not for time:
-- they are left out. A consumer's quiet hours push its non-urgent webhooks' time to the window's end
-- (whk.quiet_until), so a dispatcher does not wake for deliveries the claim would leave waiting.
-- The dispatcher sleeps until then (or a wake-up, or its poll interval, whichever comes first).
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and was parsed and planned at every
-- call (measured: ~0.45 ms of planning per call, the dispatcher asks up to ten times a second); PL/pgSQL
-- keeps the plan for the session.
CREATE OR REPLACE FUNCTION whk.next_wakeup()
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
-- The kept plan stays on its indexes, no JIT: the reason is given once, at whk.route_and_take.
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    RETURN (SELECT min(CASE WHEN a.quiet_hours IS NULL OR w.urgent THEN t.at
                            ELSE coalesce(whk.quiet_until(a.quiet_hours, greatest(t.at, clock_timestamp())), t.at)
                       END)
    FROM whk.whk_01_webhooks w
    JOIN whk.webhook_runtime r ON r.webhook_id = w.id
    JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id AND a.status = 'active'
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS due FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'pending'
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) n
    CROSS JOIN LATERAL (SELECT greatest(
               CASE WHEN w.delivery_mode = 'batch'
                    THEN n.due + make_interval(secs => w.batch_window_ms / 1000.0) ELSE n.due END,
               CASE WHEN r.breaker_state = 'open' THEN r.probe_at END,
               -- The rate clamped to its bounds, as in the claim: a denormal one overflows the division.
               CASE WHEN coalesce(w.rate_limit_per_second, 0) > 0 AND r.tokens IS NOT NULL AND r.tokens < 1
                    THEN r.tokens_at + make_interval(secs => least((1 - r.tokens)
                                                                   / least(greatest(w.rate_limit_per_second::double precision,
                                                                                    0.001), 1000000),
                                                                   86400))
               END) AS at) t
    WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL
      AND w.needs_secret_since IS NULL);
END;
$$;
-- <<< sql/functions/delivery/next_wakeup.sql

-- >>> sql/functions/delivery/pause_webhook.sql
-- Pause a webhook. The claim serves active webhooks only, so its pending deliveries stay pending (due,
-- not parked) and go out as soon as whk.resume_webhook makes it active again; deliveries in flight finish
-- their attempt. Routing still fans out to a paused webhook: events committed while it is paused get their
-- deliveries, pending, and go out in order after the resume (an operator pausing for a receiver's
-- maintenance window gets every event afterwards). A disabled webhook may be paused as well: its parked
-- deliveries stay parked and its disabled_reason is kept until it is resumed; from then on it is routed to
-- like any paused webhook.
-- Returns false when the webhook was already paused (nothing changed).
CREATE OR REPLACE FUNCTION whk.pause_webhook(p_webhook_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_status text;
BEGIN
    SELECT w.status INTO v_status
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id AND w.deleted_at IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;
    IF v_status = 'paused' THEN
        RETURN false;
    END IF;
    UPDATE whk.whk_01_webhooks w
    SET status = 'paused', updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION whk.pause_webhook(bigint) IS
    'Pause a webhook: nothing is claimed for it (pending deliveries wait) until whk.resume_webhook. False when already paused.';
-- <<< sql/functions/delivery/pause_webhook.sql

-- >>> sql/functions/delivery/purge_dead_deliveries.sql
-- whk.purge_dead_deliveries: remove dead letters for good (the API's DELETE /deliveries/{id} and POST
-- /deliveries/purge; a DBA's psql). Only rows still dead when this runs are deleted, whatever ids are
-- passed: a delivery retried meanwhile (back to pending) or never dead is left alone, so the caller's
-- count of candidates is an upper bound and the return value is the truth. Their attempts go with them
-- (ON DELETE CASCADE). Once no dead letter or unfinished delivery needs its event, the event's outbox
-- partition can be dropped by retention. Returns the ids deleted, ascending.
CREATE OR REPLACE FUNCTION whk.purge_dead_deliveries(p_ids bigint[])
RETURNS SETOF bigint
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH gone AS (
        DELETE FROM whk.whk_03_entregas d
         WHERE d.id = ANY (p_ids) AND d.status = 'dead'
        RETURNING d.id
    )
    SELECT id FROM gone ORDER BY id;
$$;
COMMENT ON FUNCTION whk.purge_dead_deliveries(bigint[]) IS
    'Delete the dead letters among p_ids (others untouched), with their attempts; returns the ids deleted.';
-- <<< sql/functions/delivery/purge_dead_deliveries.sql

-- >>> sql/functions/delivery/quarantine_webhook.sql
-- Quarantine a webhook: the dispatcher stops claiming for it (and, at stage 'route', stops routing to it)
-- because its data made a shared delivery statement fail, or the SSRF guard refused its endpoint. Without
-- this, one bad row fails the set-based statements of every dispatcher round for every webhook.
--
-- p_stage: 'route' (routing its events failed), 'claim' (claiming its deliveries failed), 'record' (writing
-- its outcomes failed), 'ssrf' (the SSRF guard refused its endpoint). p_sqlstate: the error's SQLSTATE
-- (NULL for 'ssrf'). The state is orthogonal to status (active/paused/disabled) and to the breaker; nothing
-- else changes, so clearing it (whk.clear_webhook_quarantine) puts the webhook back where it was. Its
-- deliveries wait as they are: pending ones stay pending, in-flight ones come back by lease expiry.
--
-- Emits `whk.webhook.quarantined` into the outbox (a durable record, deliverable to webhooks that subscribe
-- to it) and, with p_actor, an audit row (whk.audit_log, looked up at run time like whk.disable_webhook).
-- Returns false when the webhook was already quarantined (the first error is kept) or does not exist.
CREATE OR REPLACE FUNCTION whk.quarantine_webhook(p_webhook_id bigint, p_stage text, p_reason text,
                                                  p_sqlstate text DEFAULT NULL, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_reason text := left(coalesce(p_reason, 'unknown error'), 2000);
BEGIN
    IF p_stage IS NULL OR p_stage NOT IN ('route', 'claim', 'record', 'ssrf') THEN
        RAISE EXCEPTION 'unknown quarantine stage %', coalesce(p_stage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use route, claim, record or ssrf';
    END IF;
    UPDATE whk.whk_01_webhooks w
    SET quarantined_at = clock_timestamp(), quarantine_stage = p_stage, quarantine_reason = v_reason,
        quarantine_sqlstate = p_sqlstate, updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.quarantined_at IS NULL
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.quarantined', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id, 'name', v_hook.name,
                               'url', v_hook.url, 'stage', p_stage, 'sqlstate', p_sqlstate, 'reason', v_reason,
                               'actor', coalesce(p_actor, current_user)),
            'EMIT');

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.quarantined'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('quarantined', false),
              jsonb_build_object('quarantined', true, 'stage', p_stage, 'sqlstate', p_sqlstate,
                                 'reason', v_reason);
    END IF;
    RETURN true;
END;
$$;
-- <<< sql/functions/delivery/quarantine_webhook.sql

-- >>> sql/functions/delivery/quiet_until.sql
-- The end of the consumer's quiet hours at p_at, or NULL when p_at is outside every window.
--
-- A window {"days": ["mon", …], "start": "22:00", "end": "07:00"} starts on each listed day at start, local
-- time in the quiet hours' time_zone, and ends at end the same day, or the next day when end is at or
-- before start: weekdays 22:00-07:00 covers Friday 22:00 to Saturday 07:00, not Sunday night. Windows that
-- touch or overlap are joined (the answer is the end of the last one), up to 16 hops, so a configuration
-- that is quiet all week answers a time at least 16 window ends later, never loops. Local times that do
-- not exist or repeat around a daylight-saving change are resolved as PostgreSQL's AT TIME ZONE does.
--
-- The claim (whk.claim_deliveries), routing (whk.route_and_take), the round's due probe
-- (whk.dispatch_round) and the dispatcher's sleep (whk.next_wakeup) ask it, so a quiet consumer's waiting
-- deliveries cost no round until the window ends. p_at is a parameter so tests choose the moment.
CREATE OR REPLACE FUNCTION whk.quiet_until(p_quiet jsonb, p_at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_tz   text := p_quiet ->> 'time_zone';
    v_at   timestamptz := p_at;
    v_end  timestamptz;
BEGIN
    IF p_quiet IS NULL OR p_at IS NULL THEN
        RETURN NULL;
    END IF;
    FOR v_hop IN 1 .. 16 LOOP
        -- Windows that started on the local day of v_at or the day before (a window is under 24 hours).
        SELECT max(x.ends) INTO v_end
        FROM jsonb_array_elements(p_quiet -> 'windows') AS w(win)
        CROSS JOIN LATERAL (VALUES ((v_at AT TIME ZONE v_tz)::date),
                                   ((v_at AT TIME ZONE v_tz)::date - 1)) AS d(day)
        CROSS JOIN LATERAL (
            SELECT (d.day + (w.win ->> 'start')::time) AT TIME ZONE v_tz AS starts,
                   (d.day + (w.win ->> 'end')::time
                    + CASE WHEN (w.win ->> 'end')::time <= (w.win ->> 'start')::time
                           THEN interval '1 day' ELSE interval '0' END) AT TIME ZONE v_tz AS ends
        ) x
        WHERE (w.win -> 'days')
              ? (ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])[extract(isodow FROM d.day)::integer]
          AND v_at >= x.starts AND v_at < x.ends;
        EXIT WHEN v_end IS NULL;
        v_at := v_end;
    END LOOP;
    RETURN CASE WHEN v_at > p_at THEN v_at END;
END;
$$;
COMMENT ON FUNCTION whk.quiet_until(jsonb, timestamptz) IS
    'End of the quiet hours in force at a moment (NULL: not quiet then).';
-- <<< sql/functions/delivery/quiet_until.sql

-- >>> sql/functions/delivery/reclaim_expired_leases.sql
-- Deliveries whose dispatcher died (kill -9, lost host) stay in_flight until their lease passes; then any
-- dispatcher puts them back to pending, due now. The attempt that may have been on the wire is not
-- counted (its outcome was never recorded), so a receiver can see it twice: at-least-once, with the same
-- webhook-id and byte-identical body. The lease is at least 3x the attempt deadline (checked at start-up),
-- so a live dispatcher's attempt always ends, recorded, before its lease could expire. Those of a webhook
-- deleted meanwhile (whk.delete_webhook) are cancelled.
-- p_now (NULL = clock_timestamp()): tests pass a later moment instead of waiting for a lease to pass.
CREATE OR REPLACE FUNCTION whk.reclaim_expired_leases(p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
    v_now   timestamptz := coalesce(p_now, clock_timestamp());
BEGIN
    UPDATE whk.whk_03_entregas d
    -- A deleted webhook's delivery is cancelled instead: nothing would ever claim it again.
    SET status = CASE WHEN EXISTS (SELECT 1 FROM whk.whk_01_webhooks w
                                   WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
                      THEN 'cancelled' ELSE 'pending' END,
        lease_until = NULL, claimed_by = NULL, batch_id = NULL,
        next_attempt_at = least(d.next_attempt_at, v_now), updated_at = v_now
    WHERE d.status = 'in_flight' AND d.lease_until < v_now;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    -- A half-open probe whose dispatcher died must not keep the breaker closed to probes forever.
    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until < v_now;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/reclaim_expired_leases.sql

-- >>> sql/functions/delivery/record_outcomes.sql
-- Record the outcomes of finished HTTP requests in one round trip (the dispatcher flushes them in groups).
--
-- One ATTEMPT per HTTP request, however many deliveries it carried: a batch of 1,000 events is one request,
-- so it is logged once (request/response, timing, error class) and its members point at it through
-- whk_03_entregas.attempt_ids. Writing the same request/response 1,000 times was most of the cost of a batch.
--
-- p_attempts is a JSON array, one element per request (ix = its position, referenced by p_attempt_ix):
--   ix, webhook_id, success (bool), failure (bool: counts for the breaker; dispatcher/classify.is_failure),
--   gone (bool: the endpoint answered 410), batch_id, started_at, duration_ms, request_method, request_url,
--   request_headers, request_body_sha256, request_body_size, response_status, response_headers,
--   response_body, response_truncated, error_class, error_detail, outcome.
-- The deliveries come as parallel arrays (one element per delivery; arrays bind as plain parameters and join
-- by hash, where a JSON document per delivery had to be parsed and re-scanned per row):
--   p_ids, p_attempt_ix (which request), p_attempt_no, p_state ('delivered'|'awaiting_ack'|'pending'|'dead'|
--   'parked'), p_next_at (pending), p_ack_deadline (awaiting_ack), p_dead_reason (dead).
-- The retry decision (next_attempt_at or dead) is made by the caller's pure retry policy; this function
-- applies it, writes the attempt log, moves the shared breaker and failure-streak state (once per request,
-- not per event: a failed batch is one failure), counts usage, and disables webhooks that answered 410.
-- A delivery whose webhook was deleted while its request ran ends cancelled unless it was delivered.
-- Rows whose lease this dispatcher lost (reclaimed by another) are left alone: the other dispatcher owns
-- them now (at-least-once, never lost); their attempt is logged all the same.
-- p_now (NULL = clock_timestamp()): the moment the outcomes are written at (breaker periods, failure streak,
-- delivered/dead times). Tests pass one instead of sleeping; the dispatcher never passes it.
-- Outputs: applied, the deliveries whose new state was written; breaker_transitions, the breakers this
-- call moved, as a JSON array of {"webhook_id", "from", "to"} (NULL when none moved), which the
-- dispatcher counts for Prometheus: returned by the same round trip instead of a query per flush.
CREATE OR REPLACE FUNCTION whk.record_outcomes(p_dispatcher text, p_attempts jsonb, p_ids bigint[],
                                               p_attempt_ix integer[], p_attempt_no integer[], p_state text[],
                                               p_next_at timestamptz[], p_ack_deadline timestamptz[],
                                               p_dead_reason text[], p_now timestamptz DEFAULT NULL,
                                               OUT applied integer, OUT breaker_transitions jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
-- Switched off around the delivery UPDATE only (see there); these clauses restore the caller's values.
SET enable_indexscan = on
SET enable_bitmapscan = on
AS $$
DECLARE
    v_now     timestamptz := coalesce(p_now, clock_timestamp());
    v_breaker jsonb := coalesce(whk.delivery_config('delivery.breaker'), '{}'::jsonb);
    v_hook    record;
    -- Each delivery's row version and new state, in id order (the UPDATE after the first statement).
    v_tid     tid[];
    v_state   text[];
    v_no      integer[];
    v_next    timestamptz[];
    v_ack     timestamptz[];
    v_reason  text[];
    v_attempt bigint[];
    v_success boolean[];
    v_code    integer[];
    v_started timestamptz[];
    v_error   text[];
BEGIN
    -- One statement for the attempt log, the breaker and usage: every data-modifying CTE sees the same rows
    -- and runs exactly once. It also finds each delivery's row; the rows are updated right after it.
    WITH items AS MATERIALIZED (
        SELECT * FROM unnest(p_ids, p_attempt_ix, p_attempt_no, p_state, p_next_at, p_ack_deadline, p_dead_reason)
                 AS i(id, ix, attempt_no, state, next_attempt_at, ack_deadline, dead_reason)
    ), attempts AS MATERIALIZED (
        -- Attempt ids are drawn here so the deliveries can point at their request in the same statement.
        SELECT a.*, nextval('whk.whk_03_entregas_tentativas_id_seq') AS attempt_id,
               m.members, m.first_id, m.first_no
        FROM jsonb_to_recordset(p_attempts) AS a(
            ix integer, webhook_id bigint, success boolean, failure boolean, gone boolean, batch_id uuid,
            started_at timestamptz, duration_ms double precision, request_method text, request_url text,
            request_headers jsonb, request_body_sha256 text, request_body_size integer, response_status integer,
            response_headers jsonb, response_body text, response_truncated boolean, error_class text,
            error_detail text, outcome text)
        JOIN (SELECT i.ix, array_agg(i.id ORDER BY i.id) AS members, min(i.id) AS first_id,
                     max(i.attempt_no) AS first_no
              FROM items i GROUP BY i.ix) m ON m.ix = a.ix
    ), logged AS (
        INSERT INTO whk.whk_03_entregas_tentativas (
            id, delivery_id, delivery_ids, webhook_id, attempt_no, batch_id, dispatcher_id, started_at,
            duration_ms, request_method, request_url, request_headers, request_body_sha256, request_body_size,
            response_status, response_headers, response_body, response_truncated, error_class, error_detail,
            outcome)
        OVERRIDING SYSTEM VALUE
        SELECT a.attempt_id, a.first_id, CASE WHEN cardinality(a.members) > 1 THEN a.members END, a.webhook_id,
               a.first_no, a.batch_id, p_dispatcher, coalesce(a.started_at, v_now), a.duration_ms,
               a.request_method, a.request_url, coalesce(a.request_headers, '{}'::jsonb), a.request_body_sha256,
               a.request_body_size, a.response_status, a.response_headers, a.response_body,
               coalesce(a.response_truncated, false), a.error_class, a.error_detail, a.outcome
        FROM attempts a
        -- The attempt happened whether or not we still hold the lease: log it either way (unless the
        -- delivery itself is gone, e.g. deleted with its webhook).
        -- (Probed through p_ids: as an EXISTS on a.first_id the planner could hash-join against a scan of
        -- the whole table.)
        WHERE a.first_id IN (SELECT d.id FROM whk.whk_03_entregas d WHERE d.id = ANY (p_ids))
    ), deleted AS MATERIALIZED (
        -- Webhooks deleted (whk.delete_webhook) while these requests ran, one probe per webhook: their
        -- deliveries end cancelled instead of waiting for a claim that never serves them (see changes).
        SELECT w.id FROM whk.whk_01_webhooks w
        WHERE w.id IN (SELECT DISTINCT a.webhook_id FROM attempts a) AND w.deleted_at IS NOT NULL
    ), changes AS MATERIALIZED (
        -- Each delivery with its request's outcome and its row's current version, found by a primary-key
        -- probe per delivery (a LATERAL that is not flattened: no plan can drive it from the table).
        -- Of a deleted webhook only a delivered one keeps its outcome; anything else is cancelled.
        SELECT i.id, x.tid,
               CASE WHEN i.state <> 'delivered' AND a.webhook_id IN (SELECT g.id FROM deleted g)
                    THEN 'cancelled' ELSE i.state END AS state,
               i.attempt_no, i.next_attempt_at, i.ack_deadline, i.dead_reason,
               a.attempt_id, a.success, a.response_status, a.started_at,
               CASE WHEN a.success THEN NULL
                    ELSE coalesce(a.error_class || ': ' || a.error_detail, a.error_class, a.outcome) END AS error
        FROM items i
        JOIN attempts a ON a.ix = i.ix
        CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM whk.whk_03_entregas y WHERE y.id = i.id LIMIT 1) x
    ), agg AS (
        -- Shared breaker and failure streak, per webhook, from this group of requests. Its settings
        -- (whk/breaker.py BreakerConfig): the webhook's breaker_config member, else the global
        -- 'delivery.breaker' member, else the built-in default.
        SELECT a.webhook_id, bool_or(a.success) AS ok, count(*) FILTER (WHERE a.failure) AS fails
        FROM attempts a
        GROUP BY a.webhook_id
    ), cfg AS (
        SELECT a.webhook_id, a.ok, a.fails,
               coalesce((w.breaker_config ->> 'failure_threshold')::integer,
                        (v_breaker ->> 'failure_threshold')::integer, 5) AS threshold,
               coalesce((w.breaker_config ->> 'open_s')::double precision,
                        (v_breaker ->> 'open_s')::double precision, 60) AS open_s,
               coalesce((w.breaker_config ->> 'open_max_s')::double precision,
                        (v_breaker ->> 'open_max_s')::double precision, 600) AS open_max_s
        FROM agg a JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
    ), breaker AS (
        UPDATE whk.webhook_runtime r
        SET breaker_state = CASE
                WHEN c.ok THEN 'closed'
                WHEN c.fails = 0 THEN r.breaker_state
                WHEN r.breaker_state = 'half_open' THEN 'open'
                WHEN r.consecutive_failures + c.fails >= c.threshold THEN 'open'
                ELSE r.breaker_state END,
            opened_at = CASE
                WHEN c.ok THEN NULL
                WHEN c.fails > 0 AND (r.breaker_state = 'half_open'
                                      OR (r.breaker_state = 'closed' AND r.consecutive_failures + c.fails >= c.threshold))
                    THEN v_now
                ELSE r.opened_at END,
            probe_at = CASE
                WHEN c.ok THEN NULL
                WHEN c.fails > 0 AND (r.breaker_state = 'half_open'
                                      OR (r.breaker_state = 'closed' AND r.consecutive_failures + c.fails >= c.threshold))
                    -- The exponent stops at 30: 2^30 x the 0.001 s floor of open_s is past the
                    -- 604800 s ceiling of open_max_s, and an uncapped one overflows double precision
                    -- after 1,023 failed probes.
                    THEN v_now + make_interval(secs => least(
                             c.open_s * power(2, CASE WHEN r.breaker_state = 'half_open'
                                                      THEN least(r.failed_probes + 1, 30) ELSE 0 END),
                             greatest(c.open_max_s, c.open_s)))
                ELSE r.probe_at END,
            failed_probes = CASE
                WHEN c.ok THEN 0
                WHEN c.fails > 0 AND r.breaker_state = 'half_open' THEN r.failed_probes + 1
                ELSE r.failed_probes END,
            probe_until = CASE WHEN c.ok OR c.fails > 0 THEN NULL ELSE r.probe_until END,
            consecutive_failures = CASE WHEN c.ok THEN 0 ELSE r.consecutive_failures + c.fails END,
            failing_since = CASE WHEN c.ok THEN NULL
                                 WHEN c.fails > 0 THEN coalesce(r.failing_since, v_now) ELSE r.failing_since END,
            last_success_at = CASE WHEN c.ok THEN v_now ELSE r.last_success_at END,
            last_failure_at = CASE WHEN c.fails > 0 THEN v_now ELSE r.last_failure_at END
        FROM cfg c
        WHERE r.webhook_id = c.webhook_id
          -- A success on a healthy, closed breaker changes nothing but last_success_at: written at most every
          -- 10 s, so a busy webhook's runtime row is not rewritten per flush (while this UPDATE holds it, the
          -- claim, which locks it SKIP LOCKED, passes the webhook by).
          AND (c.fails > 0 OR r.breaker_state <> 'closed' OR r.consecutive_failures > 0 OR r.failed_probes > 0
               OR r.failing_since IS NOT NULL OR r.last_success_at IS NULL
               OR (c.ok AND r.last_success_at < v_now - interval '10 seconds'))
        RETURNING r.webhook_id, r.breaker_state, r.opened_at
    ), was AS (
        -- The breakers before this statement, for the transitions it reports.
        SELECT r.webhook_id, r.breaker_state FROM whk.webhook_runtime r
        WHERE r.webhook_id IN (SELECT a.webhook_id FROM agg a)
    ), moved AS (
        -- Opened by this statement: opened_at is set to this call's v_now only by the UPDATE that opens
        -- (a concurrent flush that finds the breaker open already keeps the older opened_at). Closed: a
        -- success on a breaker that was not closed.
        SELECT b.webhook_id, coalesce(w.breaker_state, 'closed') AS from_state, b.breaker_state AS to_state
        FROM breaker b LEFT JOIN was w ON w.webhook_id = b.webhook_id
        WHERE (b.breaker_state = 'open' AND b.opened_at = v_now)
           OR (b.breaker_state = 'closed' AND w.breaker_state IN ('open', 'half_open'))
    ), usage AS (
        -- Consumer usage and activity, in aggregate, counted in deliveries.
        UPDATE whk.whk_04_assinantes s
        SET usage_deliveries_total = s.usage_deliveries_total + u.total,
            usage_deliveries_failed = s.usage_deliveries_failed + coalesce(u.failed, 0),
            last_activity_at = v_now
        FROM (SELECT w.consumer_id, sum(cardinality(a.members)) AS total,
                     sum(cardinality(a.members)) FILTER (WHERE NOT coalesce(a.success, false)) AS failed
              FROM attempts a JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
              GROUP BY w.consumer_id) u
        WHERE s.id = u.consumer_id
    )
    SELECT array_agg(c.tid ORDER BY c.id), array_agg(c.state ORDER BY c.id), array_agg(c.attempt_no ORDER BY c.id),
           array_agg(c.next_attempt_at ORDER BY c.id), array_agg(c.ack_deadline ORDER BY c.id),
           array_agg(c.dead_reason ORDER BY c.id), array_agg(c.attempt_id ORDER BY c.id),
           array_agg(c.success ORDER BY c.id), array_agg(c.response_status ORDER BY c.id),
           array_agg(c.started_at ORDER BY c.id), array_agg(c.error ORDER BY c.id),
           (SELECT jsonb_agg(jsonb_build_object('webhook_id', m.webhook_id, 'from', m.from_state,
                                                'to', m.to_state) ORDER BY m.webhook_id) FROM moved m)
    INTO v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error,
         breaker_transitions
    FROM changes c;

    -- The deliveries' new states, by row version (TID scans): linear whatever the statistics say. Joined by
    -- id instead, the plan depended on statistics that are whatever the last ANALYZE saw (an empty table
    -- after a truncate, nothing in flight...), and plans that drove the join from an index scanned the
    -- outcomes once per row of the table: quadratic (measured in a batch drain: 6,000 in flight x 1,000
    -- outcomes, 0.9-3.4 s per flush). With index scans off for this statement only a TID scan per
    -- outcome is left. A row updated since it was found (a lease reclaimed by another dispatcher) has a
    -- new version and fails the TID or the ownership check: it is left alone, its attempt logged all the
    -- same.
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    UPDATE whk.whk_03_entregas d
    SET status = c.state,
        attempts = greatest(d.attempts, c.attempt_no),
        attempt_ids = d.attempt_ids || c.attempt_id,
        next_attempt_at = CASE WHEN c.state = 'pending' THEN c.next_attempt_at ELSE d.next_attempt_at END,
        lease_until = NULL,
        claimed_by = NULL,
        last_status_code = c.response_status,
        last_error = c.error,
        last_attempt_at = c.started_at,
        delivered_at = CASE WHEN c.success THEN v_now ELSE d.delivered_at END,
        acked_at = CASE WHEN c.state = 'delivered' THEN v_now ELSE d.acked_at END,
        ack_deadline = CASE WHEN c.state = 'awaiting_ack' THEN c.ack_deadline END,
        dead_at = CASE WHEN c.state = 'dead' THEN v_now END,
        dead_reason = CASE WHEN c.state = 'dead' THEN c.dead_reason END,
        updated_at = v_now
    FROM unnest(v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error)
         AS c(tid, state, attempt_no, next_attempt_at, ack_deadline, dead_reason, attempt_id, success,
              response_status, started_at, error)
    WHERE d.ctid = c.tid AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher;
    GET DIAGNOSTICS applied = ROW_COUNT;
    PERFORM set_config('enable_indexscan', 'on', true), set_config('enable_bitmapscan', 'on', true);

    -- 410 disables the webhook; an SSRF refusal quarantines it (stage 'ssrf'): no request can reach the
    -- endpoint under this dispatcher's policy, so its deliveries wait (pending) for an operator instead of
    -- burning their retry schedule as if the endpoint were down. One pass over the attempts for both.
    FOR v_hook IN
        SELECT (e ->> 'webhook_id')::bigint AS id, bool_or((e ->> 'gone')::boolean) AS gone,
               min(coalesce(e ->> 'error_detail', 'address refused'))
                   FILTER (WHERE e ->> 'outcome' = 'blocked') AS blocked
        FROM jsonb_array_elements(p_attempts) e
        WHERE (e ->> 'gone')::boolean OR e ->> 'outcome' = 'blocked'
        GROUP BY 1
    LOOP
        IF v_hook.gone THEN
            PERFORM whk.disable_webhook(v_hook.id, 'endpoint answered 410 Gone', 'whk-dispatcher');
        END IF;
        IF v_hook.blocked IS NOT NULL THEN
            PERFORM whk.quarantine_webhook(v_hook.id, 'ssrf', 'ssrf_blocked: ' || v_hook.blocked
                                           || ' (dispatcher ' || p_dispatcher || ')', NULL, 'whk-dispatcher');
        END IF;
    END LOOP;
END;
$$;
-- <<< sql/functions/delivery/record_outcomes.sql

-- >>> sql/functions/delivery/release_deliveries.sql
-- Graceful shutdown: give back every delivery this dispatcher still holds (pending again, due now, the
-- attempt not counted) so other dispatchers pick them up at once instead of after the lease. Those of a
-- webhook deleted meanwhile (whk.delete_webhook) are cancelled.
CREATE OR REPLACE FUNCTION whk.release_deliveries(p_dispatcher text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    -- A deleted webhook's delivery is cancelled instead: nothing would ever claim it again.
    SET status = CASE WHEN EXISTS (SELECT 1 FROM whk.whk_01_webhooks w
                                   WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
                      THEN 'cancelled' ELSE 'pending' END,
        lease_until = NULL, claimed_by = NULL, batch_id = NULL,
        next_attempt_at = least(d.next_attempt_at, clock_timestamp()), updated_at = clock_timestamp()
    WHERE d.status = 'in_flight' AND d.claimed_by = p_dispatcher;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    UPDATE whk.webhook_runtime r SET probe_until = NULL
    WHERE r.breaker_state = 'half_open' AND r.probe_until IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = r.webhook_id AND d.status = 'in_flight');
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/release_deliveries.sql

-- >>> sql/functions/delivery/replay.sql
-- whk.replay: the SQL control plane's replay, as `POST /webhooks/{id}/replay` and `whk replay` do it. Sends
-- the webhook's past events in [since, until) (still in outbox retention) again, each (event, webhook)
-- pair under its one webhook-id forever, through the replay job (whk.replay_start: the job worker works it
-- in batches; progress and cancel in whk.replays, whk.replay_cancel). event_types narrows the webhook's
-- own subscription (NULL or '{}' = all of it); predicate is a SQL/JSON path over the event envelope.
-- dry_run counts what would be sent and starts nothing (replay_id NULL). The actor recorded is the
-- database role (`sql:<role>`), as the SQL-side audit trail names it.
CREATE OR REPLACE FUNCTION whk.replay(webhook_id bigint, since timestamptz, until timestamptz DEFAULT now(),
                                     event_types text[] DEFAULT NULL, predicate jsonpath DEFAULT NULL,
                                     dry_run boolean DEFAULT false,
                                     OUT replay_id bigint, OUT total bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF dry_run THEN
        -- Same refusals as a real start (unknown webhook, empty range, past the retention horizon), then
        -- the count; the savepoint's rollback leaves no replay row and no job behind.
        BEGIN
            replay_id := whk.replay_start(replay.webhook_id, replay.since, replay.until, replay.event_types,
                                          replay.predicate, 'sql:' || session_user);
            SELECT r.total INTO total FROM whk.replays r WHERE r.id = replay_id;
            RAISE EXCEPTION USING ERRCODE = 'WHKRB';
        EXCEPTION
            WHEN SQLSTATE 'WHKRB' THEN
                replay_id := NULL;
        END;
        RETURN;
    END IF;
    replay_id := whk.replay_start(replay.webhook_id, replay.since, replay.until, replay.event_types,
                                  replay.predicate, 'sql:' || session_user);
    SELECT r.total INTO total FROM whk.replays r WHERE r.id = replay_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.replay(bigint, timestamptz, timestamptz, text[], jsonpath, boolean) FROM PUBLIC;
COMMENT ON FUNCTION whk.replay(bigint, timestamptz, timestamptz, text[], jsonpath, boolean) IS
    'Replay a webhook''s past events in [since, until) through the replay job (one webhook-id per pair forever); dry_run counts only. Returns (replay_id, total).';
-- <<< sql/functions/delivery/replay.sql

-- >>> sql/functions/delivery/replay_cancel.sql
-- whk.replay_cancel: stop a queued or running replay. Waits for a batch in progress (it holds the row), so
-- once this returns no further delivery is created or re-queued by it; what earlier batches queued is
-- delivered as usual (cancel those deliveries separately if needed). Returns false when the replay had
-- already finished (done, cancelled or failed).
CREATE OR REPLACE FUNCTION whk.replay_cancel(p_replay_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH c AS (
        UPDATE whk.replays
           SET state = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE id = p_replay_id AND state IN ('queued', 'running')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM c);
$$;
COMMENT ON FUNCTION whk.replay_cancel(bigint) IS 'Cancel a queued or running replay (false if already finished).';
-- <<< sql/functions/delivery/replay_cancel.sql

-- >>> sql/functions/delivery/replay_events.sql
-- whk.replay_events: the outbox events a replay sends to a webhook, in (created_at, id) order after the
-- keyset position (p_after_created, p_after_id), at most p_limit (NULL: all, for counting). An event
-- qualifies when it was routed (pending events are still on their way through the router), was created in
-- [p_since, p_until), and the webhook would have received it: its subscription (event_types, filter)
-- matches, as in whk.route_and_take. p_types narrows the types (names or patterns; empty: no narrowing)
-- and p_predicate is an SQL/JSON path predicate on the envelope (`@@`, like a webhook's filter: a
-- structural mismatch is no match). ordering_key is what the router would give an ordered webhook's
-- delivery. The created_at range prunes the outbox partitions.
-- A webhook pinned to a major gets what routing gives it (whk.render_event): payload, the body rendered
-- to its major, which the filter, the predicate and the ordering-key path read; or render_problem, why it
-- cannot be rendered (the delivery is then created parked). Both NULL for an unpinned webhook.
-- The result gained payload and render_problem: the old signature is dropped, its return type differs.
DROP FUNCTION IF EXISTS whk.replay_events(bigint, timestamptz, timestamptz, text[], jsonpath, timestamptz,
                                          bigint, integer);
CREATE OR REPLACE FUNCTION whk.replay_events(p_webhook_id bigint, p_since timestamptz, p_until timestamptz,
                                             p_types text[], p_predicate jsonpath,
                                             p_after_created timestamptz DEFAULT NULL,
                                             p_after_id bigint DEFAULT NULL, p_limit integer DEFAULT NULL)
RETURNS TABLE (outbox_id bigint, created_at timestamptz, event_id uuid, event_type text, commit_seq bigint,
               ordering_key text, payload jsonb, render_problem text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT o.id, o.created_at, o.event_id, o.event_type, o.commit_seq,
           CASE WHEN w.delivery_mode = 'ordered' THEN
               coalesce(jsonb_path_query_first(coalesce(x.body, env.payload), w.ordering_key_path, '{}'::jsonb,
                                               true) #>> '{}',
                        o.event_key, '')
           END,
           x.body, x.problem
    FROM whk.whk_01_webhooks w
    JOIN whk.outbox o
      ON o.created_at >= p_since AND o.created_at < p_until
     AND o.status = 'routed'
     AND whk.event_type_matches(w.event_types, o.event_type)
     AND (cardinality(p_types) = 0 OR whk.event_type_matches(p_types, o.event_type))
     AND (p_after_created IS NULL OR (o.created_at, o.id) > (p_after_created, p_after_id))
    CROSS JOIN LATERAL (SELECT whk.event_envelope(o) AS payload OFFSET 0) env
    LEFT JOIN LATERAL (SELECT g.body, g.problem
                       FROM whk.render_event(env.payload, o.event_type, o.event_version, w.payload_version) g
                       WHERE w.payload_version IS NOT NULL
                       OFFSET 0) x ON true
    WHERE w.id = p_webhook_id
      AND (x.problem IS NOT NULL OR w.filter IS NULL
           OR coalesce(coalesce(x.body, env.payload) @@ w.filter, false))
      AND (p_predicate IS NULL OR coalesce(coalesce(x.body, env.payload) @@ p_predicate, false))
    ORDER BY o.created_at, o.id
    LIMIT p_limit
$$;
COMMENT ON FUNCTION whk.replay_events(bigint, timestamptz, timestamptz, text[], jsonpath, timestamptz, bigint, integer) IS
    'Outbox events a replay sends to a webhook (subscription, types, predicate), keyset-paged.';
-- <<< sql/functions/delivery/replay_events.sql

-- >>> sql/functions/delivery/replay_start.sql
-- whk.replay_start: record a replay of the webhook's past events and queue its job (pgqueuer entrypoint
-- `replay`, run by the job worker). Refused when the range reaches before the outbox retention horizon
-- (whk.retention_horizon('outbox')): those events may be gone, and a replay that silently sends part of
-- what was asked is worse than none; the error's DETAIL names the horizon. total is counted now; events
-- routed later inside the range are still sent (the job works until it finds no more). SECURITY DEFINER
-- only to queue the job: the callers' roles have no rights on pgqueuer's table. Tenancy is the caller's
-- business (the API checks the webhook is the caller's own). Returns the replay's id.
CREATE OR REPLACE FUNCTION whk.replay_start(p_webhook_id bigint, p_since timestamptz, p_until timestamptz,
                                            p_types text[], p_predicate jsonpath, p_created_by text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_horizon  timestamptz := whk.retention_horizon('outbox');
    v_consumer bigint;
    v_id       bigint;
BEGIN
    SELECT w.consumer_id INTO v_consumer FROM whk.whk_01_webhooks w
     WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % not found', p_webhook_id
            USING ERRCODE = 'no_data_found', HINT = 'replay to an existing, not deleted webhook';
    END IF;
    IF p_since IS NULL OR p_until IS NULL OR p_since >= p_until THEN
        RAISE EXCEPTION 'empty replay range [%, %)', p_since, p_until
            USING ERRCODE = 'invalid_parameter_value', HINT = 'since must be before until';
    END IF;
    IF p_since < v_horizon THEN
        RAISE EXCEPTION 'replay range starts before the outbox retention horizon %', v_horizon
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'horizon=' || v_horizon,
                  HINT = 'since must be at or after the horizon (retention.outbox_days)';
    END IF;
    INSERT INTO whk.replays (webhook_id, consumer_id, since, until, event_types, predicate, total, created_by)
    VALUES (p_webhook_id, v_consumer, p_since, p_until, coalesce(p_types, '{}'), p_predicate,
            (SELECT count(*) FROM whk.replay_events(p_webhook_id, p_since, p_until, coalesce(p_types, '{}'),
                                                    p_predicate)),
            p_created_by)
    RETURNING id INTO v_id;
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status)
    VALUES (0, 'replay', convert_to(v_id::text, 'UTF8'), 'queued');
    RETURN v_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.replay_start(bigint, timestamptz, timestamptz, text[], jsonpath, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.replay_start(bigint, timestamptz, timestamptz, text[], jsonpath, text)
    TO whk_app, whk_dispatcher;
COMMENT ON FUNCTION whk.replay_start(bigint, timestamptz, timestamptz, text[], jsonpath, text) IS
    'Record a replay (refused before the outbox retention horizon) and queue its job; returns its id.';
-- <<< sql/functions/delivery/replay_start.sql

-- >>> sql/functions/delivery/replay_step.sql
-- whk.replay_step: one batch of a replay (the job worker calls it until it returns false; a DBA can too).
-- The replay row is locked for the batch, so a cancel (whk.replay_cancel) waits for the running batch and
-- the next step sees it and stops. For each of the next p_batch events (whk.replay_events after the
-- keyset position): an event the webhook never had gets a new pending delivery, due now; an event it
-- already has keeps that delivery, re-queued through whk.retry_deliveries (same row, same event_id, so the
-- same webhook-id header: the receiver can deduplicate; one being attempted right now is left alone).
-- Returns true while there may be more to do.
CREATE OR REPLACE FUNCTION whk.replay_step(p_replay_id bigint, p_batch integer DEFAULT 1000)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    r           record;
    v_n         integer;
    v_last_at   timestamptz;
    v_last_id   bigint;
    v_existing  bigint[];
    v_created   integer;
    v_requeued  integer := 0;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 events per step';
    END IF;
    SELECT * INTO r FROM whk.replays WHERE id = p_replay_id FOR UPDATE;
    IF NOT FOUND OR r.state NOT IN ('queued', 'running') THEN
        RETURN false;
    END IF;
    -- A webhook deleted meanwhile is never claimed again: its new deliveries would wait forever (and keep
    -- their outbox partitions). The replay stops there, saying why.
    IF NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = r.webhook_id AND w.deleted_at IS NULL) THEN
        UPDATE whk.replays
           SET state = 'failed', error = 'the webhook was deleted', finished_at = clock_timestamp(),
               updated_at = clock_timestamp()
         WHERE id = p_replay_id;
        RETURN false;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS whk_replay_batch (
        outbox_id bigint, created_at timestamptz, event_id uuid, event_type text, commit_seq bigint,
        ordering_key text, payload jsonb, render_problem text
    ) ON COMMIT DROP;
    TRUNCATE whk_replay_batch;
    INSERT INTO whk_replay_batch
    SELECT * FROM whk.replay_events(r.webhook_id, r.since, r.until, r.event_types, r.predicate,
                                    r.cursor_created_at, r.cursor_id, p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    SELECT b.created_at, b.outbox_id INTO v_last_at, v_last_id
      FROM whk_replay_batch b ORDER BY b.created_at DESC, b.outbox_id DESC LIMIT 1;

    SELECT array_agg(d.id) INTO v_existing
      FROM whk_replay_batch b
      JOIN whk.whk_03_entregas d ON d.event_id = b.event_id AND d.webhook_id = r.webhook_id;
    IF v_existing IS NOT NULL THEN
        v_requeued := whk.retry_deliveries(v_existing);
    END IF;
    INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
                                     ordering_key, commit_seq, next_attempt_at, status, payload, render_problem)
    -- A pinned webhook's body as routing renders it; one that cannot be rendered waits parked, as routed.
    SELECT b.event_id, b.outbox_id, b.created_at, b.event_type, w.id, w.consumer_id, b.ordering_key,
           b.commit_seq, clock_timestamp(), CASE WHEN b.render_problem IS NULL THEN 'pending' ELSE 'parked' END,
           b.payload, b.render_problem
      FROM whk_replay_batch b
      JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
     ORDER BY b.created_at, b.outbox_id
    ON CONFLICT (event_id, webhook_id) DO NOTHING;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    IF v_created > 0 THEN
        INSERT INTO whk.webhook_runtime (webhook_id) VALUES (r.webhook_id) ON CONFLICT (webhook_id) DO NOTHING;
    END IF;
    IF v_created + v_requeued > 0 THEN
        PERFORM whk.wake_dispatchers();
    END IF;

    UPDATE whk.replays
       SET done = done + v_n, created = created + v_created, requeued = requeued + v_requeued,
           -- Events routed after the count (late commits inside the range) are sent too.
           total = greatest(total, done + v_n),
           cursor_created_at = coalesce(v_last_at, cursor_created_at),
           cursor_id = coalesce(v_last_id, cursor_id),
           state = CASE WHEN v_n < p_batch THEN 'done' ELSE 'running' END,
           finished_at = CASE WHEN v_n < p_batch THEN clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = p_replay_id;
    RETURN v_n = p_batch;
END;
$$;
COMMENT ON FUNCTION whk.replay_step(bigint, integer) IS
    'One batch of a replay: new deliveries for new pairs, existing ones re-queued (same webhook-id).';
-- <<< sql/functions/delivery/replay_step.sql

-- >>> sql/functions/delivery/resume_webhook.sql
-- Re-enable a disabled or paused webhook: its parked deliveries become pending again (same event_id, so
-- the same webhook-id header), its breaker closes, its failure streak restarts and a quarantine
-- (whk.quarantine_webhook) is lifted: resuming says "deliver again".
-- Returns the number of deliveries released from the parking lot (not those waiting for a transform).
CREATE OR REPLACE FUNCTION whk.resume_webhook(p_webhook_id bigint)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_released integer;
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET status = 'active', disabled_reason = NULL, disabled_at = NULL, quarantined_at = NULL,
        quarantine_stage = NULL, quarantine_reason = NULL, quarantine_sqlstate = NULL,
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;

    UPDATE whk.webhook_runtime r
    SET breaker_state = 'closed', consecutive_failures = 0, opened_at = NULL, probe_at = NULL,
        probe_until = NULL, failing_since = NULL
    WHERE r.webhook_id = p_webhook_id;

    UPDATE whk.whk_03_entregas d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        updated_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'parked'
      -- Not those parked for a transform: sent now they would carry the wrong major
      -- (whk.render_parked_deliveries releases them).
      AND d.render_problem IS NULL;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;
COMMENT ON FUNCTION whk.resume_webhook(bigint) IS
    'Resume a paused, disabled or quarantined webhook: parked deliveries are released (returns how many).';
-- <<< sql/functions/delivery/resume_webhook.sql

-- >>> sql/functions/delivery/retry_dead.sql
-- The SQL control plane (docs/dba.md): put dead letters back in the queue, filtered — by webhook, consumer,
-- event type (exact, or a prefix pattern like 'order.*') and the time they died — oldest first, at most
-- max_rows of them per call (call again for more). A wrapper of whk.retry_deliveries: the same event_id, so
-- the same webhook-id header (receivers deduplicate), a fresh retry schedule. Returns how many were
-- re-queued. Bad input raises invalid_parameter_value with a HINT.
--   SELECT whk.retry_dead(webhook_id => 7, since => now() - interval '1 day');
CREATE OR REPLACE FUNCTION whk.retry_dead(
    webhook_id  bigint      DEFAULT NULL,
    consumer_id bigint      DEFAULT NULL,
    event_type  text        DEFAULT NULL,
    since       timestamptz DEFAULT NULL,
    until       timestamptz DEFAULT NULL,
    max_rows    integer     DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text;
    v_ids     bigint[];
BEGIN
    v_problem := CASE
        WHEN retry_dead.max_rows IS NULL OR retry_dead.max_rows NOT BETWEEN 1 AND 100000
            THEN 'max_rows must be between 1 and 100000'
        WHEN retry_dead.webhook_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = retry_dead.webhook_id)
            THEN format('webhook_id %s is not a webhook', retry_dead.webhook_id)
        WHEN retry_dead.consumer_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.id = retry_dead.consumer_id)
            THEN format('consumer_id %s is not a consumer', retry_dead.consumer_id)
        WHEN retry_dead.event_type IS NOT NULL
             AND retry_dead.event_type !~ '^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$'
            THEN format('event_type %L is neither a type (order.created), a prefix (order.*) nor *', retry_dead.event_type)
        WHEN retry_dead.since > retry_dead.until THEN 'since must not be after until'
    END;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.retry_dead: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Every filter is optional (NULL = any): webhook_id, consumer_id, event_type, since, until; '
                         'max_rows 1-100000. Dead letters: SELECT id, webhook_id, event_type, dead_at, dead_reason '
                         'FROM whk.whk_03_entregas WHERE status = ''dead''.';
    END IF;
    SELECT coalesce(array_agg(x.id), '{}') INTO v_ids
    FROM (SELECT d.id FROM whk.whk_03_entregas d
          WHERE d.status = 'dead'
            AND (retry_dead.webhook_id IS NULL OR d.webhook_id = retry_dead.webhook_id)
            AND (retry_dead.consumer_id IS NULL OR d.consumer_id = retry_dead.consumer_id)
            AND (retry_dead.event_type IS NULL OR whk.event_type_matches(ARRAY[retry_dead.event_type], d.event_type))
            AND (retry_dead.since IS NULL OR d.dead_at >= retry_dead.since)
            AND (retry_dead.until IS NULL OR d.dead_at < retry_dead.until)
          ORDER BY d.dead_at, d.id
          LIMIT retry_dead.max_rows) x;
    RETURN whk.retry_deliveries(v_ids);
END;
$$;
COMMENT ON FUNCTION whk.retry_dead(bigint, bigint, text, timestamptz, timestamptz, integer) IS
    'SQL control plane: re-queue dead letters matching the filters (oldest first, at most max_rows); returns how many.';
-- <<< sql/functions/delivery/retry_dead.sql

-- >>> sql/functions/delivery/retry_deliveries.sql
-- Manual / bulk retry: put finished or failed deliveries back in the queue now, with a fresh retry
-- schedule (schedule_offset = attempts so far) but the SAME event_id, hence the same webhook-id header:
-- receivers deduplicate replays. The signature is fresh because it is computed per attempt.
-- Rows in flight are left alone (their attempt is running), and so are deliveries of a deleted webhook
-- (whk.delete_webhook: nothing more is sent to an endpoint its owner removed, and no claim would serve
-- them), rows whose event is no longer in the outbox (retention) and rows parked for a missing or failing
-- transform (their body for the pinned major does not exist yet: whk.render_parked_deliveries releases
-- them). Returns how many were re-queued; the API reports the others as skipped.
CREATE OR REPLACE FUNCTION whk.retry_deliveries(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
        dead_at = NULL, dead_reason = NULL, ack_deadline = NULL, lease_until = NULL, claimed_by = NULL,
        batch_id = NULL, updated_at = clock_timestamp()
    WHERE d.id = ANY (p_ids) AND d.status IN ('dead', 'delivered', 'awaiting_ack', 'pending', 'parked')
      AND d.render_problem IS NULL
      AND NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = d.webhook_id AND w.deleted_at IS NOT NULL)
      -- Only while its event is still in the outbox (the claim rebuilds the body from it): a delivered
      -- delivery whose outbox partition retention dropped cannot be sent again.
      AND EXISTS (SELECT 1 FROM whk.outbox o WHERE o.id = d.outbox_id AND o.created_at = d.event_created_at);
    GET DIAGNOSTICS v_count = ROW_COUNT;

    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT DISTINCT d.webhook_id FROM whk.whk_03_entregas d WHERE d.id = ANY (p_ids)
    ON CONFLICT (webhook_id) DO NOTHING;
    RETURN v_count;
END;
$$;
-- <<< sql/functions/delivery/retry_deliveries.sql

-- >>> sql/functions/delivery/retry_delivery.sql
-- Manual retry of one delivery (see whk.retry_deliveries): true when it was re-queued.
CREATE OR REPLACE FUNCTION whk.retry_delivery(p_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    SELECT whk.retry_deliveries(ARRAY[p_id]) = 1;
$$;
-- <<< sql/functions/delivery/retry_delivery.sql

-- >>> sql/functions/delivery/route_and_take.sql
-- Route up to p_limit pending outbox events, and let the calling dispatcher TAKE up to p_take of the new
-- deliveries at once. This is the routing step: the dispatcher runs it through whk.dispatch_round, tests
-- and tools call it with p_take = 0 (route only, nothing taken).
--
-- Routing rules:
-- * Events are picked by STATUS (outbox.status = 'pending'), never by an id watermark: ids are taken before
--   commit, so a low id can become visible after higher ones; a watermark would skip it forever.
-- * Each routed event gets a commit_seq (the order in which it became visible, which is commit order across
--   transactions; within one batch, id order) and is marked routed. Routing runs under a
--   transaction-level advisory try-lock (key hashtext('whk.route_outbox'), the routing lock's name) so
--   commit_seq is monotonic across dispatchers: a second router returns routed = 0 at once and goes on
--   delivering; the lock is held for one short statement batch.
-- * Fan-out is ONE set-based INSERT: every event x every matching webhook (active or paused, not deleted,
--   its consumer active or suspended, its event_types pattern matches, filter true).
-- * Pinned webhooks (payload_version set) get the event rendered to their major (whk.render_event:
--   transforms, plus a "version" member), stored on the delivery as its body; the filter and the
--   ordering-key path read that rendered body, since the subscriber wrote them for its major. When it
--   cannot be rendered (no chain of transforms, a transform raised) the delivery is created parked with
--   the reason in render_problem, filter unchecked, never taken: that one delivery waits for
--   whk.render_parked_deliveries and the rest of the statement goes on (docs/capture.md).
-- * A paused webhook or a suspended consumer gets its deliveries pending, none taken: the claim holds them
--   until it is active again, so nothing committed meanwhile is lost. A disabled webhook or consumer is
--   not routed to. Events nobody subscribes to are routed too and kept for replay.
-- * Filters are SQL/JSON path predicates stored as the jsonpath type (validated by PostgreSQL on write);
--   `@@` yields NULL rather than an error on structural mismatches, which counts as "no match".
-- * Non-strict schema validation: events of registered, non-strict types are checked here with
--   whk.validate_payload and flagged (outbox.valid / validation_error) but still delivered; strict types
--   were validated when emitted (valid = true already); unregistered types stay NULL.
-- * Ordered webhooks get the delivery's ordering_key (ordering_key_path in the envelope, else the event
--   key); each delivery is due at max(now, deliver_at or created_at + the webhook's delay_seconds).
-- * Delayed webhooks with supersede_by_key get the same key (no key: NULL, never superseded), and after the
--   batch whk.supersede_deliveries lets the newest delivery of each key replace the older unsent ones.
--
-- Taking: the taken deliveries are inserted already in flight, leased to p_dispatcher, and returned with
-- their payload. A fresh event for an unconstrained immediate webhook then costs one write of its delivery
-- row instead of an INSERT plus a claim UPDATE (each of those rewrites every index of whk_03_entregas), and
-- it reaches the HTTP client in the same round trip.
--
-- Only deliveries the fair claim would hand out at once are taken, so every rule still holds: the
-- webhook and its consumer are active; the webhook is in immediate mode (one request per delivery) or
-- batch mode (only full batches of batch_size, one request each, under one batch_id) with no delay, and
-- the event is due now; the webhook has no due backlog (fresh events never overtake waiting ones); its
-- breaker is closed; no token bucket applies (webhook, default or consumer) and the consumer has no daily
-- quota; the in-flight cap (in requests) has room; at most p_take requests are taken. The webhook's
-- runtime row is locked FOR UPDATE SKIP LOCKED like the claim does, so a webhook being claimed by another
-- dispatcher right now is simply not taken from (its deliveries stay pending and are claimed normally).
-- Everything else stays pending for whk.claim_deliveries. tests/db/test_admission_rules.py holds the table
-- of cases that both functions answer.
--
-- Returns one row per taken delivery, each carrying `routed` (events routed), plus, when nothing was
-- taken, one row with only `routed` set.
--
-- p_finished: the caller's deliveries whose request has ended, outcome not yet recorded; the in-flight cap
-- does not count them (see whk.claim_deliveries).
--
-- Quarantine (whk.quarantine_webhook): a webhook quarantined while routing (stage 'route': its data broke
-- this statement) is not routed to; one quarantined at a later stage still gets its deliveries, pending,
-- so nothing is lost while it waits, but none is taken here (the claim skips it too). p_only (NULL = every
-- webhook) restricts the fan-out to those webhooks: whk.isolate_round_faults probes with it; the
-- dispatcher's rounds never pass it.
CREATE OR REPLACE FUNCTION whk.route_and_take(p_limit integer, p_dispatcher text, p_take integer,
                                              p_lease_s double precision, p_finished bigint[] DEFAULT '{}',
                                              p_only bigint[] DEFAULT NULL)
RETURNS TABLE (routed integer, delivery_id bigint, webhook_id bigint, event_id uuid, event_type text,
               attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text,
               payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Every query here has an index made for it, and its plan is cached for the session: a generic plan made
-- while the tables were small (a fresh install, the first seconds after a truncate or a new partition)
-- kept seq-scanning them as they grew, until an autoanalyze. Measured: routing 1 event went from 1.8 to
-- 2.6 ms as 1,500 rows accumulated. No JIT: a plan that still had to seq-scan would cost ~1e10 with seq
-- scans disabled and be JIT-compiled at every execution.
-- Always the generic plan: with plan_cache_mode = auto PostgreSQL compares the generic plan with the first
-- custom ones, and the choice it keeps depends on the first calls' sizes. Measured (0014): when it kept
-- custom plans, recording one outcome spent ~1.9 ms planning its statement at every flush; for a round of
-- 1,000 events the custom plan took 225 ms and the generic one 157 ms, and 1.2 vs 2.9 ms for one event.
-- No statement here has a join whose generic plan grows faster than its input (each was measured at 1 to
-- 1,000 rows), so the generic plan is the right one at every size.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_lease    timestamptz := clock_timestamp() + make_interval(secs => p_lease_s);
    v_ids      bigint[];
    v_created  timestamptz[];
    v_routed   integer;
    v_taken    bigint;
    v_defaults jsonb;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whk.route_outbox')) THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer, NULL::integer,
                            NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;

    -- The batch, in id order (within one visibility batch id order is the best commit-order proxy). Kept as
    -- arrays: every later step reads them once (a CTE referenced from a join was re-scanned per row).
    SELECT array_agg(p.id ORDER BY p.id), array_agg(p.created_at ORDER BY p.id) INTO v_ids, v_created
    FROM (SELECT o.id, o.created_at
          FROM whk.outbox o
          WHERE o.status = 'pending'
          ORDER BY o.id
          LIMIT p_limit
          FOR UPDATE SKIP LOCKED) p;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer, NULL::integer,
                            NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;
    -- A configured default token bucket applies to every webhook: then nothing is taken here.
    v_defaults := whk.delivery_config('rate_limit.webhook_default');
    IF v_defaults ->> 'per_second' IS NOT NULL THEN
        p_take := 0;
    END IF;

    RETURN QUERY
    WITH numbered AS MATERIALIZED (
        SELECT u.id, u.created_at, nextval('whk.outbox_commit_seq') AS seq
        FROM unnest(v_ids, v_created) WITH ORDINALITY AS u(id, created_at, n)
        ORDER BY u.n
    ), routed AS (
        UPDATE whk.outbox o
        SET status = 'routed', routed_at = v_now, commit_seq = n.seq,
            valid = CASE WHEN v.checked THEN v.error IS NULL ELSE o.valid END,
            validation_error = CASE WHEN v.checked THEN v.error ELSE o.validation_error END
        FROM numbered n
        JOIN whk.outbox src ON src.id = n.id AND src.created_at = n.created_at
        -- The delivered body, built once per event (OFFSET 0 keeps the sub-select from being pulled up,
        -- which would evaluate the envelope again for validation and for RETURNING).
        CROSS JOIN LATERAL (SELECT whk.event_envelope(src) AS payload OFFSET 0) env
        LEFT JOIN LATERAL (
            -- Downstream validation of non-strict registered types. The version's compiled check
            -- (whk_02_eventos_versoes.check_path) accepts a valid envelope here, in the statement; only what it
            -- does not accept goes through whk.validate_payload, which decides and names the error.
            SELECT true AS checked,
                   CASE WHEN env.payload -> 'type' = to_jsonb(src.event_type)
                             AND jsonb_typeof(env.payload -> 'timestamp') = 'string'
                             AND coalesce((env.payload -> 'data') @@ ver.check_path, false)
                        THEN NULL
                        ELSE whk.validate_payload(src.event_type, src.event_version, env.payload) END AS error
            FROM whk.whk_02_eventos e
            LEFT JOIN LATERAL (SELECT x.check_path
                                 FROM whk.whk_02_eventos_versoes x
                                WHERE x.event_type_id = e.id AND x.major = coalesce(src.event_version, e.current_major)
                                ORDER BY x.minor DESC
                                LIMIT 1) ver ON true
            WHERE e.name = src.event_type AND NOT e.strict AND src.valid IS NULL
            OFFSET 0  -- not pulled up: the verdict is computed once, not once per column that reads it
        ) v ON true
        WHERE o.id = n.id AND o.created_at = n.created_at
        RETURNING o.id, o.created_at, o.event_id, o.event_type, o.event_version, o.event_key, env.payload,
                  o.deliver_at, o.commit_seq
    ), targets AS (
        -- Subscriptions are matched once per (event type, webhook), not per event: a batch holds few types.
        -- Paused webhooks and suspended consumers still get their deliveries (pending: the claim holds
        -- them until resumed, then they go out in order); disabled ones (webhook or consumer) do not.
        SELECT t.event_type, w.id, w.consumer_id, w.delivery_mode, w.ordering_key_path, w.delay_seconds,
               w.payload_version, w.filter, w.supersede_by_key
        -- The rules are whk.route_target_open and whk.route_payload_matches (inlined; whk.explain names
        -- which one a webhook fails).
        FROM (SELECT DISTINCT r.event_type FROM routed r) t
        JOIN whk.whk_01_webhooks w
          ON whk.event_type_matches(w.event_types, t.event_type)
         AND (p_only IS NULL OR w.id = ANY (p_only))
        JOIN whk.whk_04_assinantes a
          ON a.id = w.consumer_id
         AND whk.route_target_open(w.status, w.deleted_at, w.quarantine_stage, a.status)
    ), takers AS MATERIALIZED (
        -- Webhooks whose new deliveries may be taken now, and how many requests (in-flight cap room; a batch
        -- in flight is one request; the caller's finished ones, found by primary key, do not count: see
        -- whk.claim_deliveries). Only webhooks with no due backlog: fresh events must not overtake (or
        -- starve) deliveries already waiting for the fair claim.
        SELECT w.id, w.delivery_mode AS mode, w.batch_size,
               w.max_in_flight - (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.whk_03_entregas d
                                  WHERE d.webhook_id = w.id AND d.status = 'in_flight')
                               + (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.whk_03_entregas d
                                  WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id
                                    AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher) AS room
        FROM whk.whk_01_webhooks w
        JOIN whk.webhook_runtime rt ON rt.webhook_id = w.id
        JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id
        WHERE p_take > 0
          AND w.id IN (SELECT DISTINCT t.id FROM targets t)
          AND w.status = 'active' AND a.status = 'active'
          AND w.delivery_mode IN ('immediate', 'batch') AND w.delay_seconds = 0
          AND w.quarantined_at IS NULL
          AND w.needs_secret_since IS NULL  -- never unsigned: its deliveries wait, pending
          AND w.rate_limit_per_second IS NULL
          AND a.rate_limit_per_second IS NULL AND a.quota_deliveries_per_day IS NULL
          AND rt.breaker_state = 'closed'
          -- Quiet hours hold a consumer's non-urgent deliveries for the claim (whk.quiet_until).
          AND (a.quiet_hours IS NULL OR w.urgent OR whk.quiet_until(a.quiet_hours, v_now) IS NULL)
          -- OFFSET 0: a probe of this webhook's due index, not an anti-join that reads every due delivery of
          -- every webhook (the generic plan's choice; see whk.claim_deliveries).
          AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                          WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                          OFFSET 0)
        FOR UPDATE OF rt SKIP LOCKED
    ), matched AS (
        SELECT r.event_id, r.id AS outbox_id, r.created_at, r.event_type, r.commit_seq, w.id AS webhook_id,
               w.consumer_id,
               CASE WHEN w.delivery_mode = 'ordered' THEN
                   coalesce(jsonb_path_query_first(coalesce(x.body, r.payload), w.ordering_key_path,
                                                   '{}'::jsonb, true) #>> '{}',
                            r.event_key, '')
                    WHEN w.supersede_by_key THEN
                   coalesce(jsonb_path_query_first(coalesce(x.body, r.payload), w.ordering_key_path,
                                                   '{}'::jsonb, true) #>> '{}',
                            r.event_key)
               END AS ordering_key,
               x.body AS rendered, x.problem AS render_problem,
               greatest(v_now, coalesce(r.deliver_at, r.created_at) + make_interval(secs => w.delay_seconds))
                   AS due_at,
               k.room, k.mode, k.batch_size,
               k.id IS NOT NULL AND coalesce(r.deliver_at, r.created_at) <= v_now
               AND x.problem IS NULL AS takeable
        FROM routed r
        JOIN targets w ON w.event_type = r.event_type
        -- Rendered once per (event, pinned webhook); not called for an unpinned one (OFFSET 0 keeps the
        -- sub-select whole, so its WHERE is a one-time gate in front of the function).
        LEFT JOIN LATERAL (SELECT g.body, g.problem
                           FROM whk.render_event(r.payload, r.event_type, r.event_version, w.payload_version) g
                           WHERE w.payload_version IS NOT NULL
                           OFFSET 0) x ON true
        LEFT JOIN takers k ON k.id = w.id
        WHERE whk.route_payload_matches(w.filter, coalesce(x.body, r.payload), x.problem)
    ), numbered_requests AS (
        -- Request number per webhook (0-based): one per delivery, or one per batch_size deliveries for a
        -- batch webhook, where only FULL batches are taken (a partial one waits for its window in the claim).
        SELECT m.*, CASE WHEN m.mode = 'batch' THEN (m.n - 1) / m.batch_size ELSE m.n - 1 END AS req
        FROM (SELECT m.*,
                     row_number() OVER (PARTITION BY m.webhook_id, m.takeable ORDER BY m.commit_seq) AS n,
                     count(*) OVER (PARTITION BY m.webhook_id, m.takeable) AS cnt
              FROM matched m) m
    ), ranked AS (
        SELECT x.*,
               x.takeable AND x.req < x.room
               AND (x.mode <> 'batch' OR (x.req + 1) * x.batch_size <= x.cnt) AS within_cap
        FROM numbered_requests x
    ), chosen AS (
        SELECT x.*,
               x.within_cap AND dense_rank() OVER (PARTITION BY x.within_cap ORDER BY x.webhook_id, x.req)
                                <= p_take AS taken
        FROM ranked x
    ), batches AS MATERIALIZED (
        SELECT b.webhook_id, b.req, gen_random_uuid() AS batch_id
        FROM (SELECT DISTINCT c.webhook_id, c.req FROM chosen c WHERE c.taken AND c.mode = 'batch') b
    ), fanned AS (
        INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, ordering_key, commit_seq, next_attempt_at, status,
                                         lease_until, claimed_by, batch_id, payload, render_problem)
        SELECT c.event_id, c.outbox_id, c.created_at, c.event_type, c.webhook_id, c.consumer_id, c.ordering_key,
               c.commit_seq, c.due_at,
               CASE WHEN c.taken THEN 'in_flight' WHEN c.render_problem IS NOT NULL THEN 'parked'
                    ELSE 'pending' END,
               CASE WHEN c.taken THEN v_lease END,
               CASE WHEN c.taken THEN p_dispatcher END,
               b.batch_id, c.rendered, c.render_problem
        FROM chosen c
        LEFT JOIN batches b ON b.webhook_id = c.webhook_id AND b.req = c.req AND c.taken
        ORDER BY c.commit_seq, c.webhook_id
        ON CONFLICT (event_id, webhook_id) DO NOTHING
        RETURNING id, webhook_id, event_id, event_type, attempts, schedule_offset, commit_seq, ordering_key,
                  outbox_id, event_created_at, status, batch_id, payload
    ), runtime AS (
        -- Only webhooks without a runtime row: ON CONFLICT on an existing row whose last version is being
        -- written by another transaction (an outcome moving the breaker) waits for it, and while this
        -- statement holds other runtime rows (takers) that wait could close a deadlock cycle.
        INSERT INTO whk.webhook_runtime (webhook_id)
        SELECT DISTINCT f.webhook_id FROM fanned f
        WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime x WHERE x.webhook_id = f.webhook_id)
        ON CONFLICT (webhook_id) DO NOTHING
    ), served AS (
        -- The fairness cursor: a webhook served here counts as served.
        UPDATE whk.webhook_runtime rt
        SET last_claim_at = v_now
        FROM (SELECT DISTINCT f.webhook_id FROM fanned f WHERE f.status = 'in_flight') s
        WHERE rt.webhook_id = s.webhook_id
    ), fired AS (
        -- Firing history in aggregate: one UPDATE per batch, never per row in the ERP transaction.
        UPDATE whk.whk_02_eventos e
        SET fire_count = e.fire_count + c.n, last_fired_at = v_now
        FROM (SELECT r.event_type, count(*) AS n FROM routed r GROUP BY r.event_type) c
        WHERE e.name = c.event_type
    )
    -- The taken deliveries with their body: the rendered one of a pinned webhook, else rebuilt from the
    -- outbox row by its primary key (the statement's snapshot still sees the row as routing found it;
    -- whk.event_envelope is deterministic). Joining `fanned` to `matched` instead was a nested loop over two
    -- CTE scans in the generic plan (a CTE is estimated at a handful of rows): quadratic, ~280 ms of a
    -- 1,000-event round.
    SELECT (SELECT count(*) FROM routed)::integer, f.id, f.webhook_id, f.event_id, f.event_type, f.attempts,
           f.schedule_offset, f.batch_id, f.commit_seq, f.ordering_key,
           coalesce(f.payload, whk.event_envelope(o))::text
    FROM fanned f
    JOIN whk.outbox o ON o.id = f.outbox_id AND o.created_at = f.event_created_at
    WHERE f.status = 'in_flight'
    ORDER BY f.commit_seq, f.webhook_id;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    PERFORM whk.supersede_deliveries(v_ids);
    IF v_taken = 0 THEN
        v_routed := cardinality(v_ids);  -- every picked event was routed
        RETURN QUERY SELECT v_routed, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                            NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
    END IF;
END;
$$;
-- <<< sql/functions/delivery/route_and_take.sql

-- >>> sql/functions/delivery/route_payload_matches.sql
-- whk.route_payload_matches: does one event pass a webhook's filter, read on the body that webhook would
-- receive (for a webhook pinned to a major, the envelope rendered to it by whk.render_event; otherwise the
-- event's own envelope)? The filter is a SQL/JSON path predicate, and `@@` yields NULL rather than an error
-- on a structural mismatch, which counts as "no match". A body that could not be rendered (render_problem
-- set) is routed anyway: its delivery is created parked with the problem, and whk.render_parked_deliveries
-- applies the filter once it renders (cancelling it then if the filter is false), so no event is lost
-- silently for want of a transform.
--
-- One definition for whk.route_and_take and whk.explain. Inlined by the planner (SQL-standard body, no SET
-- clause).
CREATE OR REPLACE FUNCTION whk.route_payload_matches(filter jsonpath, body jsonb, render_problem text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT render_problem IS NOT NULL OR filter IS NULL OR coalesce(body @@ filter, false);
END;
COMMENT ON FUNCTION whk.route_payload_matches(jsonpath, jsonb, text) IS
    'Routing rule: the webhook''s filter is true on the body it would receive (rendered for its pinned major); an unrenderable body is routed, parked.';
-- <<< sql/functions/delivery/route_payload_matches.sql

-- >>> sql/functions/delivery/route_target_open.sql
-- whk.route_target_open: may routing create deliveries for this webhook at all, whatever the event? Its
-- webhook is active or paused and not deleted, not quarantined while routing (stage 'route': its data broke
-- the routing statement), and its consumer is active or suspended. Paused webhooks and suspended consumers
-- are routed to on purpose: their deliveries wait, pending, and go out in order once resumed; disabled
-- ones are not routed to (nothing accumulates for them).
--
-- One definition of the rule for whk.route_and_take (the fan-out) and whk.explain (which names why a
-- webhook would not get an event). SQL-standard body without a SET clause, so the planner inlines it into
-- the caller's query: the fan-out's plan is the same as with the conditions written out.
CREATE OR REPLACE FUNCTION whk.route_target_open(webhook_status text, deleted_at timestamptz,
                                                 quarantine_stage text, consumer_status text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT webhook_status IN ('active', 'paused') AND deleted_at IS NULL
           AND quarantine_stage IS DISTINCT FROM 'route'
           AND consumer_status IN ('active', 'suspended');
END;
COMMENT ON FUNCTION whk.route_target_open(text, timestamptz, text, text) IS
    'Routing rule: webhook active or paused, not deleted, not quarantined at routing; consumer active or suspended.';
-- <<< sql/functions/delivery/route_target_open.sql

-- >>> sql/functions/delivery/set_consumer_status.sql
-- Set a consumer's status ('active' | 'suspended' | 'disabled') and move its deliveries to match: the
-- status gates delivery as well as API access, so a tenant switched off is switched off everywhere.
-- * suspended: a pause for every webhook of the consumer. Events are still routed to them and wait,
--   pending; the claim serves nothing of the consumer until it is active again; nothing is lost.
-- * disabled: like disabling each of its webhooks (whk.disable_webhook): its pending deliveries are parked
--   and new events are not routed to it. The webhook rows keep their own status.
-- * active (or suspended) after disabled: the deliveries parked for the consumer become pending, due now,
--   with a fresh retry schedule, as whk.resume_webhook does; those of a webhook that is disabled itself
--   stay parked for whk.resume_webhook, those of a deleted one are cancelled by whk.delete_webhook already.
-- Deliveries in flight finish their attempt; a failure returns them to pending, which the claim leaves
-- alone while the consumer is not active.
-- Returns changed = false when the consumer already had that status (nothing moved).
CREATE OR REPLACE FUNCTION whk.set_consumer_status(p_consumer_id bigint, p_status text, OUT changed boolean,
                                                   OUT parked integer, OUT released integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_before text;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('active', 'suspended', 'disabled') THEN
        RAISE EXCEPTION 'invalid consumer status %', coalesce(quote_literal(p_status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use one of active, suspended, disabled';
    END IF;
    SELECT a.status INTO v_before FROM whk.whk_04_assinantes a WHERE a.id = p_consumer_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no consumer %', coalesce(p_consumer_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of an existing consumer: SELECT id, name, status FROM whk.whk_04_assinantes';
    END IF;
    changed := v_before IS DISTINCT FROM p_status;
    parked := 0;
    released := 0;
    IF NOT changed THEN
        RETURN;
    END IF;

    UPDATE whk.whk_04_assinantes a SET status = p_status, updated_at = clock_timestamp()
    WHERE a.id = p_consumer_id;

    IF p_status = 'disabled' THEN
        UPDATE whk.whk_03_entregas d
        SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
        WHERE d.consumer_id = p_consumer_id AND d.status = 'pending';
        GET DIAGNOSTICS parked = ROW_COUNT;
    ELSIF v_before = 'disabled' THEN
        UPDATE whk.whk_03_entregas d
        SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
            updated_at = clock_timestamp()
        FROM whk.whk_01_webhooks w
        WHERE d.consumer_id = p_consumer_id AND d.status = 'parked' AND d.render_problem IS NULL
          AND w.id = d.webhook_id AND w.status <> 'disabled' AND w.deleted_at IS NULL;
        GET DIAGNOSTICS released = ROW_COUNT;
    END IF;
END;
$$;
COMMENT ON FUNCTION whk.set_consumer_status(bigint, text) IS
    'Set a consumer''s status; disabled parks its pending deliveries, leaving disabled releases them. Returns (changed, parked, released).';
-- <<< sql/functions/delivery/set_consumer_status.sql

-- >>> sql/functions/delivery/supersede_deliveries.sql
-- Supersede-by-key (docs/delivery.md, "Supersede by key"), run by whk.route_and_take after each routing batch
-- (p_outbox_ids: the events it routed). For every webhook with supersede_by_key (delayed mode only, see the
-- whk_01_webhooks_supersede_delayed CHECK), the newest delivery of each key among the ones just routed
-- supersedes the older deliveries of that (webhook, key) that are still pending and were never attempted:
-- they become 'superseded', a final state, with superseded_by naming the delivery that replaced them (kept,
-- not lost; visible in the API with status=superseded). The key is the delivery's ordering_key (the webhook's
-- ordering_key_path on the envelope, else the event key); a delivery without one is never superseded.
--
-- The replacement takes the earliest due time of what it replaces, so a key that keeps changing is sent at
-- most delay_seconds after its first unsent change, with the latest state: superseding never postpones.
--
-- Race with a claim: a delivery a dispatcher has claimed (in_flight, or locked by a claim that is about to
-- make it so) is never superseded. The UPDATE's status = 'pending' condition is checked again on the row's
-- latest version after waiting for the claim's lock, and a claim skips rows this statement has locked (SKIP
-- LOCKED), which after commit are superseded. A delivery that failed and waits for a retry (attempts > 0)
-- was sent once already and is left to its schedule.
--
-- Costs nothing when no webhook supersedes (one probe of a partial index); otherwise one index probe per
-- routed event (whk_03_entregas_outbox_idx) and one per key on the lane index.
CREATE OR REPLACE FUNCTION whk.supersede_deliveries(p_outbox_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_n integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.supersede_by_key AND w.deleted_at IS NULL) THEN
        RETURN 0;
    END IF;
    WITH fresh AS (
        SELECT DISTINCT ON (d.webhook_id, d.ordering_key) d.id, d.webhook_id, d.ordering_key, d.commit_seq
        FROM whk.whk_01_webhooks w
        JOIN whk.whk_03_entregas d ON d.webhook_id = w.id
        WHERE w.supersede_by_key AND w.deleted_at IS NULL
          AND d.outbox_id = ANY (p_outbox_ids) AND d.status = 'pending' AND d.ordering_key IS NOT NULL
        ORDER BY d.webhook_id, d.ordering_key, d.commit_seq DESC, d.id DESC
    ), gone AS (
        UPDATE whk.whk_03_entregas o
        SET status = 'superseded', superseded_by = f.id, updated_at = clock_timestamp()
        FROM fresh f
        WHERE o.webhook_id = f.webhook_id AND o.ordering_key = f.ordering_key
          AND o.status = 'pending' AND o.attempts = 0 AND o.commit_seq < f.commit_seq
        RETURNING f.id AS by_id, o.next_attempt_at
    ), moved AS (
        UPDATE whk.whk_03_entregas n
        SET next_attempt_at = least(n.next_attempt_at, g.first_due)
        FROM (SELECT x.by_id, min(x.next_attempt_at) AS first_due FROM gone x GROUP BY x.by_id) g
        WHERE n.id = g.by_id
    )
    SELECT count(*)::integer INTO v_n FROM gone;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.supersede_deliveries(bigint[]) IS
    'Supersede-by-key: mark older never-attempted pending deliveries of a key superseded by the newest one.';
-- <<< sql/functions/delivery/supersede_deliveries.sql

-- >>> sql/functions/delivery/trace_webhook.sql
-- Turn the trace flag of one webhook on for p_seconds (1..86400), or off with 0. While it is on, every
-- dispatcher logs the webhook's requests, responses (credentials masked) and the classifier's decisions
-- at INFO, as WHK_DEBUG does for every webhook: production can be debugged for one webhook without a
-- restart. The dispatchers read the flag with the webhook's settings (cached for ~2 s), so it takes effect
-- within seconds and ends by itself at trace_until. Returns trace_until (NULL when switched off).
CREATE OR REPLACE FUNCTION whk.trace_webhook(p_webhook_id bigint, p_seconds integer)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_until timestamptz;
BEGIN
    IF p_seconds IS NULL OR p_seconds < 0 OR p_seconds > 86400 THEN
        RAISE EXCEPTION 'trace duration % is out of range', coalesce(p_seconds::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass seconds between 1 and 86400 (a day) to trace, or 0 to stop tracing';
    END IF;
    PERFORM 1 FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id AND w.deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;
    IF p_seconds > 0 THEN
        v_until := v_now + make_interval(secs => p_seconds);
    END IF;
    INSERT INTO whk.webhook_runtime AS r (webhook_id, trace_set_at, trace_until)
    VALUES (p_webhook_id, CASE WHEN p_seconds > 0 THEN v_now END, v_until)
    ON CONFLICT (webhook_id) DO UPDATE
        SET trace_set_at = excluded.trace_set_at, trace_until = excluded.trace_until;
    RETURN v_until;
END;
$$;
COMMENT ON FUNCTION whk.trace_webhook(bigint, integer) IS
    'Log one webhook''s deliveries in detail for p_seconds (1..86400; 0 stops): WHK_DEBUG for one webhook, no restart.';
-- <<< sql/functions/delivery/trace_webhook.sql

-- >>> sql/functions/ops/dispatcher_heartbeat.sql
-- A dispatcher announces itself and proves it is alive (every few seconds). Rows of dispatchers silent
-- for longer than p_forget_after_s are removed: their deliveries are reclaimed by lease expiry anyway,
-- and a stale idle flag would make capture triggers NOTIFY for nobody.
--
-- p_ssrf_policy / p_ssrf_exempt: the SSRF policy this process enforces (a fingerprint and the exempt CIDRs,
-- WHK_ALLOW_PRIVATE_CIDRS). Every dispatcher of a deployment must agree, or which process claims a
-- delivery decides whether it may reach a private address; /api/whk/monitoring/health compares them.
-- p_last_error: why the dispatcher's rounds are failing right now (an error not about one webhook, which
-- it cannot quarantine away), NULL while they succeed; last_error_at keeps when that error first appeared.
CREATE OR REPLACE FUNCTION whk.dispatcher_heartbeat(p_id text, p_hostname text, p_pid integer, p_version text,
                                                    p_stopping boolean, p_forget_after_s double precision,
                                                    p_ssrf_policy text DEFAULT NULL,
                                                    p_ssrf_exempt text[] DEFAULT NULL,
                                                    p_last_error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    INSERT INTO whk.dispatchers AS x (id, hostname, pid, version, stopping, ssrf_policy, ssrf_exempt, last_error,
                                      last_error_at)
    VALUES (p_id, p_hostname, p_pid, p_version, p_stopping, p_ssrf_policy, p_ssrf_exempt, left(p_last_error, 2000),
            CASE WHEN p_last_error IS NOT NULL THEN now() END)
    ON CONFLICT (id) DO UPDATE
    SET heartbeat_at = now(), stopping = excluded.stopping, hostname = excluded.hostname, pid = excluded.pid,
        version = excluded.version, ssrf_policy = excluded.ssrf_policy, ssrf_exempt = excluded.ssrf_exempt,
        last_error = excluded.last_error,
        last_error_at = CASE WHEN excluded.last_error IS NULL THEN NULL
                             WHEN x.last_error IS NOT DISTINCT FROM excluded.last_error THEN x.last_error_at
                             ELSE now() END;

    DELETE FROM whk.dispatchers d
    WHERE d.id <> p_id AND d.heartbeat_at < now() - make_interval(secs => p_forget_after_s);
END;
$$;
-- <<< sql/functions/ops/dispatcher_heartbeat.sql

-- >>> sql/functions/ops/dispatcher_set_idle.sql
-- whk.dispatcher_set_idle: a dispatcher declares that it is about to sleep (idle) or busy again.
-- Capture triggers and whk.emit NOTIFY channel 'whk_outbox' only while some live dispatcher is idle, so
-- busy periods cost the ERP no NOTIFY at all (NOTIFY serialises commits cluster-wide). Protocol: LISTEN
-- first, set idle, then re-check the outbox before sleeping (a row committed in between is seen by that
-- check; polling every WHK_POLL_INTERVAL is the backstop). Returns false when no such dispatcher is
-- registered in whk.dispatchers. Also refreshes heartbeat_at: idle dispatchers whose heartbeat is older
-- than 60 s no longer count as idle (a crashed idle dispatcher must not make every commit notify).
CREATE OR REPLACE FUNCTION whk.dispatcher_set_idle(id text, idle boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    UPDATE whk.dispatchers AS d
       SET idle = dispatcher_set_idle.idle,
           heartbeat_at = now()
     WHERE d.id = dispatcher_set_idle.id;
    RETURN FOUND;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.dispatcher_set_idle(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.dispatcher_set_idle(text, boolean) TO whk_dispatcher;
COMMENT ON FUNCTION whk.dispatcher_set_idle(text, boolean) IS
    'Declare a dispatcher idle (capture then NOTIFYs whk_outbox) or busy (no NOTIFY); false = unknown dispatcher.';
-- <<< sql/functions/ops/dispatcher_set_idle.sql

-- >>> sql/functions/ops/enqueue_notice.sql
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
-- <<< sql/functions/ops/enqueue_notice.sql

-- >>> sql/functions/ops/kpi_latency_bound.sql
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
-- <<< sql/functions/ops/kpi_latency_bound.sql

-- >>> sql/functions/ops/kpi_rollup.sql
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
-- <<< sql/functions/ops/kpi_rollup.sql

-- >>> sql/functions/ops/kpi_webhook_window_at.sql
-- Attempt KPIs of each webhook over the last p_window_s seconds, from the minute roll-up
-- (whk.kpi_webhook_minute): the window starts at the minute that contains now() - p_window_s.
-- Plain LANGUAGE sql without SET so PostgreSQL inlines it: a caller's WHERE webhook_id = ... reaches the
-- roll-up's primary key, and the window's start, from statement_timestamp() (stable, unlike
-- clock_timestamp()), is the second column's bound: one webhook's window is read, not its 31 days.
-- Alert evaluation calls it with each rule's window; whk.kpi_webhook_window is it at the standard windows.
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
    WHERE m.minute >= date_trunc('minute', statement_timestamp() - make_interval(secs => p_window_s))
    GROUP BY m.webhook_id
$$;
-- <<< sql/functions/ops/kpi_webhook_window_at.sql

-- >>> sql/functions/ops/migration_begin.sql
-- whk.migration_begin: called first by every migration file (ledger row first, serialised, gapless).
CREATE OR REPLACE FUNCTION whk.migration_begin(p_version integer, p_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_latest integer;
BEGIN
    -- One runner at a time, whether it is `whk db migrate` or a DBA's psql session; the lock is
    -- re-entrant for the runner, which already holds it at session level.
    PERFORM pg_advisory_xact_lock(hashtext('whk.schema_migrations'));

    IF EXISTS (SELECT 1 FROM whk.schema_migrations WHERE version = p_version) THEN
        RAISE EXCEPTION 'migration % (%) is already applied', lpad(p_version::text, 4, '0'), p_name
            USING ERRCODE = 'unique_violation',
                  HINT = 'migrations are forward-only; `whk db status` lists what is applied';
    END IF;

    SELECT max(version) INTO v_latest FROM whk.schema_migrations;
    IF coalesce(v_latest, 0) <> p_version - 1 THEN
        RAISE EXCEPTION 'migration % (%) cannot follow version %', lpad(p_version::text, 4, '0'), p_name,
            coalesce(v_latest, 0)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'apply the migrations in order; `whk db plan` prints what is pending';
    END IF;

    INSERT INTO whk.schema_migrations (version, name, checksum)
    VALUES (p_version, p_name, nullif(current_setting('whk.migration_checksum', true), ''));
END;
$$;
COMMENT ON FUNCTION whk.migration_begin(integer, text) IS
    'Called first by every migration: serialises runners, refuses re-applies and gaps, writes the ledger row.';
-- <<< sql/functions/ops/migration_begin.sql

-- >>> sql/functions/ops/outbox_create_partitions.sql
-- whk.outbox_create_partitions: make sure whk.outbox has one partition per day (or week/month) from the
-- current period up to `ahead` from now, named outbox_pYYYYMMDD after the period's first day. Run it daily
-- (cron, pg_cron, or the dispatcher's maintenance loop); it is idempotent and returns the partitions it
-- created. Rows that landed in outbox_default for a period (partitions created late) are moved into the
-- new partition in the same transaction, keeping their ids, so nothing is lost or duplicated.
-- Creating a partition briefly takes an ACCESS EXCLUSIVE lock on whk.outbox (ERP inserts wait a moment):
-- creating them ahead of time keeps the default partition empty and this instantaneous.
CREATE OR REPLACE FUNCTION whk.outbox_create_partitions(ahead interval DEFAULT '7 days', period text DEFAULT 'day')
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_step  interval;
    v_from  timestamptz;
    v_to    timestamptz;
    v_name  text;
    v_moved bigint;
BEGIN
    IF period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'invalid partition period %', quote_literal(period)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use day, week or month';
    END IF;
    v_step := ('1 ' || period)::interval;
    -- Periods are aligned in UTC so the partition bounds do not depend on the session time zone.
    v_from := date_trunc(period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE v_from <= now() + ahead LOOP
        v_to := ((v_from AT TIME ZONE 'UTC') + v_step) AT TIME ZONE 'UTC';
        v_name := 'outbox_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
        -- Skip periods already covered by any partition (whatever its name or size).
        IF NOT EXISTS (SELECT 1 FROM whk.outbox_partitions p
                        WHERE NOT p.is_default AND p.range_from < v_to AND p.range_to > v_from) THEN
            LOCK TABLE whk.outbox IN ACCESS EXCLUSIVE MODE;
            CREATE TEMP TABLE IF NOT EXISTS whk_outbox_moving (LIKE whk.outbox) ON COMMIT DROP;
            TRUNCATE whk_outbox_moving;
            WITH moved AS (
                DELETE FROM whk.outbox_default WHERE created_at >= v_from AND created_at < v_to RETURNING *
            )
            INSERT INTO whk_outbox_moving SELECT * FROM moved;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            EXECUTE format('CREATE TABLE whk.%I PARTITION OF whk.outbox FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_from, v_to);
            IF v_moved > 0 THEN
                INSERT INTO whk.outbox OVERRIDING SYSTEM VALUE SELECT * FROM whk_outbox_moving;
            END IF;
            RETURN NEXT v_name;
        END IF;
        v_from := v_to;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) FROM PUBLIC;
-- The job worker's `housekeeping` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_create_partitions(interval, text) IS
    'Create outbox partitions (day/week/month) up to now() + ahead; moves stray rows out of outbox_default.';
-- <<< sql/functions/ops/outbox_create_partitions.sql

-- >>> sql/functions/ops/outbox_drop_partitions.sql
-- whk.outbox_drop_partitions: retention. Drops outbox partitions whose whole period ended more than
-- older_than ago, but only those that hold no work (whk.outbox_partition_work): a partition is kept while
-- any of its events is still pending (not routed yet), failed the router's schema validation (valid =
-- false: kept for an operator's look unless keep_invalid is false; the router delivers such events anyway
-- and marks them, it never gives them a status of their own), or has a delivery that is not finished
-- (pending, in_flight, awaiting_ack, parked) or was dead-lettered (dead letters keep their event for
-- inspection and replay; retry or purge them to release it). One row per old partition says what
-- happened. The default partition is never dropped.
--
-- Locks: a partition is first checked without a lock; only one that looks droppable is then locked
-- (ACCESS EXCLUSIVE on it, SHARE on whk_03_entregas so no delivery of its events appears meanwhile),
-- checked again and detached (ACCESS EXCLUSIVE on whk.outbox: ERP inserts and the router wait for that
-- moment). Those locks last until the caller's transaction ends, so max_drops bounds the partitions
-- dropped per call: the job worker calls it with max_drops => 1, one short transaction per partition,
-- until nothing more goes. lock_timeout (1 s) bounds how long a waiting lock holds others up behind it;
-- a busy partition is simply kept this time. A transaction reading the partition (a replay) finishes
-- first.
-- dry_run = true takes no lock and drops nothing: `dropped` then says what a real run would do. `bytes` is
-- the partition's size on disk with its indexes (pg_total_relation_size), what dropping it frees.
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
                                                      keep_invalid boolean DEFAULT true,
                                                      dry_run boolean DEFAULT false,
                                                      max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
DECLARE
    v_part    regclass;
    v_from    timestamptz;
    v_to      timestamptz;
    v_why     text;
    v_dropped integer := 0;
BEGIN
    IF max_drops IS NOT NULL AND max_drops < 1 THEN
        RAISE EXCEPTION 'max_drops must be at least 1, got %', max_drops
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL drops every droppable partition';
    END IF;
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.outbox_partitions p
         WHERE NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        EXIT WHEN v_dropped >= max_drops;
        bytes := pg_total_relation_size(v_part);
        v_why := whk.outbox_partition_work(v_part, v_from, v_to, keep_invalid);
        IF v_why IS NULL AND NOT dry_run THEN
            BEGIN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
                LOCK TABLE whk.whk_03_entregas IN SHARE MODE;
                v_why := whk.outbox_partition_work(v_part, v_from, v_to, keep_invalid);
                IF v_why IS NULL THEN
                    EXECUTE format('ALTER TABLE whk.outbox DETACH PARTITION %s', v_part);
                    EXECUTE format('DROP TABLE %s', v_part);
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                v_why := 'busy (lock timeout), try again later';
            END;
        END IF;
        IF v_why IS NULL THEN
            dropped := true;
            reason := format(CASE WHEN dry_run THEN 'would remove events from %s to %s'
                                  ELSE 'events from %s to %s removed' END, v_from, v_to);
            v_dropped := v_dropped + 1;
        ELSE
            dropped := false;
            reason := 'kept: ' || v_why;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it.
GRANT EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished or dead-lettered deliveries.';
-- <<< sql/functions/ops/outbox_drop_partitions.sql

-- >>> sql/functions/ops/outbox_partition_work.sql
-- whk.outbox_partition_work: why an outbox partition cannot be dropped yet, or NULL when nothing needs it:
-- an event still pending (not routed; outbox_pending_idx), one that failed its schema check (valid =
-- false, when p_keep_invalid; read by a scan of the partition), or a delivery of one of its events that is
-- unfinished or dead (the partial status indexes of whk_03_entregas, filtered on event_created_at).
-- Deliveries have no copy of their payload: the claim rebuilds the body from the outbox row
-- (whk.event_envelope), so a partition is needed as long as any of them may still be sent or retried.
CREATE OR REPLACE FUNCTION whk.outbox_partition_work(p_part regclass, p_from timestamptz, p_to timestamptz,
                                                     p_keep_invalid boolean)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_why text;
BEGIN
    EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %1$s WHERE status = ''pending'') THEN ''pending events'''
                   '            WHEN $1 AND EXISTS (SELECT 1 FROM %1$s WHERE valid IS FALSE) THEN ''invalid events'' END',
                   p_part)
       INTO v_why USING p_keep_invalid;
    IF v_why IS NULL THEN
        SELECT CASE WHEN d.status = 'dead' THEN 'dead-lettered deliveries' ELSE 'unfinished deliveries' END
          INTO v_why
          FROM whk.whk_03_entregas d
         WHERE d.status IN ('pending', 'in_flight', 'awaiting_ack', 'parked', 'dead')
           AND d.event_created_at >= p_from AND d.event_created_at < p_to
         ORDER BY d.status = 'dead'
         LIMIT 1;
    END IF;
    RETURN v_why;
END;
$$;
COMMENT ON FUNCTION whk.outbox_partition_work(regclass, timestamptz, timestamptz, boolean) IS
    'Why an outbox partition is still needed (pending/invalid events, unfinished or dead deliveries), or NULL.';
-- <<< sql/functions/ops/outbox_partition_work.sql

-- >>> sql/functions/ops/retention_delete_attempts.sql
-- whk.retention_delete_attempts: one batch of attempt-log retention. Deletes at most p_batch attempts
-- started before the 'attempts' horizon whose delivery is delivered or cancelled (or already gone), lowest
-- ids first. The attempts of a dead letter or of unfinished work stay: they are what an operator reads
-- before retrying. A delivery's attempt_ids may then name attempts that no longer exist (there is no
-- foreign key on them). Returns how many were deleted; call it until it returns less than p_batch.
CREATE OR REPLACE FUNCTION whk.retention_delete_attempts(p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 rows per call';
    END IF;
    DELETE FROM whk.whk_03_entregas_tentativas t
     WHERE t.id IN (SELECT a.id FROM whk.whk_03_entregas_tentativas a
                     WHERE a.started_at < whk.retention_horizon('attempts')
                       AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                                        WHERE d.id = a.delivery_id
                                          AND d.status NOT IN ('delivered', 'cancelled', 'superseded'))
                     ORDER BY a.id
                     LIMIT p_batch
                       FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.retention_delete_attempts(integer) IS
    'Retention: delete one batch of attempts of finished deliveries older than retention.attempts_days.';
-- <<< sql/functions/ops/retention_delete_attempts.sql

-- >>> sql/functions/ops/retention_delete_audit.sql
-- whk.retention_delete_audit: one batch of audit-trail retention. The audit log is append-only for every
-- WHK role (none has DELETE on it); this SECURITY DEFINER function, owned by the schema owner, is the one
-- way rows leave, and it only deletes rows older than the 'audit' horizon (retention.audit_days, at
-- least 30 days by its bounds), oldest first along audit_log_occurred_idx, at most p_batch per call. So a
-- role allowed to run retention still cannot erase or rewrite recent audit rows. Returns how many were
-- deleted; call it until it returns less than p_batch.
CREATE OR REPLACE FUNCTION whk.retention_delete_audit(p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 rows per call';
    END IF;
    DELETE FROM whk.audit_log l
     WHERE l.id IN (SELECT a.id FROM whk.audit_log a
                     -- The 30-day floor again here: the function must hold it even if the setting's
                     -- CHECK were dropped.
                     WHERE a.occurred_at < least(whk.retention_horizon('audit'), now() - interval '30 days')
                     ORDER BY a.occurred_at, a.id
                     LIMIT p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.retention_delete_audit(integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.retention_delete_audit(integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.retention_delete_audit(integer) IS
    'Retention: delete one batch of audit rows older than retention.audit_days (the only way rows leave).';
-- <<< sql/functions/ops/retention_delete_audit.sql

-- >>> sql/functions/ops/retention_delete_deliveries.sql
-- whk.retention_delete_deliveries: one batch of delivery-history retention. Deletes at most p_batch
-- delivered, cancelled or superseded deliveries that finished (updated_at) before the 'delivered' horizon, lowest ids
-- first (the primary key: old rows come first, so the scan stops early), with their attempts (ON DELETE
-- CASCADE). Never a pending, in-flight, awaiting-ack, parked or dead delivery: dead letters stay until
-- they are retried or purged. Returns how many were deleted; call it again until it returns less than
-- p_batch, each call in its own transaction, so no statement holds its row locks for long.
-- whk_03_entregas is not partitioned yet, so its retention is a batched DELETE; time-partitioned history
-- (dropped like the outbox) is the planned next step.
CREATE OR REPLACE FUNCTION whk.retention_delete_deliveries(p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 rows per call';
    END IF;
    DELETE FROM whk.whk_03_entregas d
     WHERE d.id IN (SELECT x.id FROM whk.whk_03_entregas x
                     WHERE x.status IN ('delivered', 'cancelled', 'superseded')
                       AND x.updated_at < whk.retention_horizon('delivered')
                     ORDER BY x.id
                     LIMIT p_batch
                       FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.retention_delete_deliveries(integer) IS
    'Retention: delete one batch of delivered/cancelled deliveries older than retention.delivered_days.';
-- <<< sql/functions/ops/retention_delete_deliveries.sql

-- >>> sql/functions/ops/retention_horizon.sql
-- whk.retention_horizon: the oldest time a kind of data is kept from, read from its retention setting in
-- whk_05_configuracoes ('retention.<kind>_days', bounded by whk.config_value_problem; 365 days when the
-- row is absent). Kinds: outbox, delivered, attempts, audit. Everything older may be removed by the
-- retention functions; a replay cannot reach before the outbox horizon.
CREATE OR REPLACE FUNCTION whk.retention_horizon(p_kind text)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_days integer;
    -- Each key spelled out: a reader of a setting names it (tests/unit/test_settings_read.py).
    v_key  text := CASE p_kind WHEN 'outbox' THEN 'retention.outbox_days'
                               WHEN 'delivered' THEN 'retention.delivered_days'
                               WHEN 'attempts' THEN 'retention.attempts_days'
                               WHEN 'audit' THEN 'retention.audit_days' END;
BEGIN
    IF v_key IS NULL THEN
        RAISE EXCEPTION 'unknown retention kind %', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use outbox, delivered, attempts or audit';
    END IF;
    SELECT (c.value #>> '{}')::integer INTO v_days
      FROM whk.whk_05_configuracoes c WHERE c.key = v_key;
    RETURN now() - make_interval(days => coalesce(v_days, 365));
END;
$$;
COMMENT ON FUNCTION whk.retention_horizon(text) IS
    'now() minus the retention setting of outbox, delivered, attempts or audit (365 days by default).';
-- <<< sql/functions/ops/retention_horizon.sql

-- >>> sql/functions/ops/retention_plan.sql
-- whk.retention_plan: what a retention run would remove now, without removing anything (`whk db retention
-- --dry-run`). One row per old outbox partition (from whk.outbox_drop_partitions in dry-run mode: its
-- exact size on disk, and whether it would be dropped or why it is kept) and one row per table retained
-- by batched deletes (whk_03_entregas, whk_03_entregas_tentativas, audit_log) with the planner's estimate
-- of the rows and the bytes they take (the table's size with indexes per live row): counting exactly
-- would read the very rows retention exists to avoid reading. SECURITY DEFINER so the worker's and the
-- read-only role may see the audit trail's numbers without reading the audit trail.
CREATE OR REPLACE FUNCTION whk.retention_plan()
RETURNS TABLE (kind text, item text, horizon timestamptz, action text, est_rows bigint, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_keep_invalid constant boolean := true;
    r record;
    v_q text;
    v_plan json;
    v_per_row double precision;
BEGIN
    horizon := whk.retention_horizon('outbox');
    FOR r IN SELECT * FROM whk.outbox_drop_partitions(now() - horizon, v_keep_invalid, dry_run => true) LOOP
        kind := 'outbox';
        item := r.partition_name;
        action := CASE WHEN r.dropped THEN 'drop partition' ELSE r.reason END;
        est_rows := NULL;
        bytes := r.bytes;
        RETURN NEXT;
    END LOOP;
    FOR kind, item, horizon, v_q IN
        SELECT k, t, whk.retention_horizon(k),
               format(q, whk.retention_horizon(k)) AS q
          FROM (VALUES
                ('delivered', 'whk.whk_03_entregas',
                 'SELECT 1 FROM whk.whk_03_entregas WHERE status IN (''delivered'', ''cancelled'', ''superseded'') AND updated_at < %L'),
                ('attempts', 'whk.whk_03_entregas_tentativas',
                 'SELECT 1 FROM whk.whk_03_entregas_tentativas a WHERE started_at < %L AND NOT EXISTS'
                 ' (SELECT 1 FROM whk.whk_03_entregas d WHERE d.id = a.delivery_id'
                 ' AND d.status NOT IN (''delivered'', ''cancelled'', ''superseded''))'),
                ('audit', 'whk.audit_log',
                 'SELECT 1 FROM whk.audit_log WHERE occurred_at < %L')) AS v(k, t, q)
    LOOP
        EXECUTE 'EXPLAIN (FORMAT JSON) ' || v_q INTO v_plan;
        est_rows := ceil((v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision);
        -- A table never analysed has reltuples -1: count it (only small, fresh tables are never analysed).
        SELECT CASE WHEN c.reltuples > 0 THEN pg_total_relation_size(c.oid) / c.reltuples::double precision END
          INTO v_per_row
          FROM pg_catalog.pg_class c WHERE c.oid = item::regclass;
        IF v_per_row IS NULL THEN
            EXECUTE format('SELECT pg_total_relation_size(%L::regclass)::double precision / greatest(count(*), 1)'
                           ' FROM %s', item, item) INTO v_per_row;
        END IF;
        action := 'batched delete';
        bytes := round(est_rows * coalesce(v_per_row, 0));
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.retention_plan() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.retention_plan() TO whk_dispatcher, whk_readonly;
COMMENT ON FUNCTION whk.retention_plan() IS
    'Dry run of retention: old outbox partitions with their sizes, estimated rows/bytes of the batched deletes.';
-- <<< sql/functions/ops/retention_plan.sql

-- >>> sql/functions/ops/slo_error_ratio.sql
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
-- <<< sql/functions/ops/slo_error_ratio.sql

-- >>> sql/functions/ops/system_health.sql
-- whk.system_health: a small snapshot of the capture side, used by system.health_check events.
CREATE OR REPLACE FUNCTION whk.system_health()
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT jsonb_build_object(
        'outbox_pending', (SELECT count(*) FROM whk.outbox WHERE status = 'pending'),
        'oldest_pending_s', (SELECT round(extract(epoch FROM now() - min(created_at))::numeric, 3)
                               FROM whk.outbox WHERE status = 'pending'),
        'dispatchers_live', (SELECT count(*) FROM whk.dispatchers
                              WHERE heartbeat_at > now() - interval '60 seconds' AND NOT stopping),
        'dispatchers_idle', (SELECT count(*) FROM whk.dispatchers
                              WHERE idle AND heartbeat_at > now() - interval '60 seconds'),
        'captured_tables', (SELECT count(*) FROM whk.capture_config));
$$;
COMMENT ON FUNCTION whk.system_health() IS 'Outbox backlog, live/idle dispatchers and captured tables as JSON.';
-- <<< sql/functions/ops/system_health.sql

-- >>> sql/triggers/audit_sql_change.sql
-- Audit covers SQL too: a change to WHK's configuration made in plain SQL (a DBA's UPDATE, whk.create_webhook,
-- whk.pause_webhook, whk.enable_capture, ...) is written to whk.audit_log in the same transaction, with the
-- database role as the actor ('sql:<login>' or 'sql:<login>/<role>' after SET ROLE). Tables: webhooks
-- (whk_01_webhooks), consumers (whk_04_assinantes), event types (whk_02_eventos) and their transforms
-- (whk_02_eventos_transforms), capture (capture_config) and global settings (whk_05_configuracoes).
--
-- Exactly one row per change: WHK's processes audit their own changes with a better actor (the API its
-- principal, the dispatcher 'whk-dispatcher'); their connections carry the session setting
-- whk.audited_by (whk.dbroles.with_audit_marker), honoured only for members of their roles, so any
-- other role's SQL is always audited. Columns the platform maintains on its own (usage counters, firing
-- history, the secret state, updated_at) are not configuration: a change of only those writes nothing.
-- Secrets never reach the trail: ciphertext columns are replaced by '[redacted]'.
--
-- SECURITY INVOKER on purpose (current_user is the role making the change); the row is written by the
-- SECURITY DEFINER whk.audit_sql_write, so a role with no grant on the audit table is audited all the same.
CREATE OR REPLACE FUNCTION whk.audit_sql_write(p_action text, p_target_type text, p_target_id text,
                                               p_consumer_id bigint, p_before jsonb, p_after jsonb)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after)
    VALUES ('sql:' || session_user
                || CASE WHEN current_setting('role') NOT IN ('none', session_user::text)
                        THEN '/' || current_setting('role') ELSE '' END,
            p_consumer_id, p_action, p_target_type, p_target_id, p_before, p_after)
$$;
COMMENT ON FUNCTION whk.audit_sql_write(text, text, text, bigint, jsonb, jsonb) IS
    'Append one audit row for a change made in SQL; the actor is the database role (session user and SET ROLE).';

CREATE OR REPLACE FUNCTION whk.audit_sql_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    -- TG_ARGV: target type, id column, consumer column ('' = none), verb of INSERT, verb of DELETE.
    v_maintained CONSTANT text[] := ARRAY['updated_at', 'needs_secret_since', 'usage_deliveries_total',
                                          'usage_deliveries_failed', 'last_activity_at', 'fire_count',
                                          'last_fired_at'];
    v_secret     CONSTANT text[] := ARRAY['auth_credential_enc'];
    v_old  jsonb;
    v_new  jsonb;
    v_row  jsonb;
    v_col  text;
    v_verb text;
BEGIN
    IF coalesce(current_setting('whk.audited_by', true), '') <> ''
       AND (pg_has_role(current_user, 'whk_app', 'MEMBER') OR pg_has_role(current_user, 'whk_dispatcher', 'MEMBER')) THEN
        RETURN NULL;  -- the process writes its own audit row
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := to_jsonb(OLD) - v_maintained;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := to_jsonb(NEW) - v_maintained;
    END IF;
    IF TG_OP = 'UPDATE' AND v_old = v_new THEN
        RETURN NULL;  -- only columns the platform maintains changed
    END IF;
    FOREACH v_col IN ARRAY v_secret LOOP
        IF v_old ? v_col AND v_old ->> v_col IS NOT NULL THEN
            v_old := jsonb_set(v_old, ARRAY[v_col], '"[redacted]"');
        END IF;
        IF v_new ? v_col AND v_new ->> v_col IS NOT NULL THEN
            v_new := jsonb_set(v_new, ARRAY[v_col], '"[redacted]"');
        END IF;
    END LOOP;
    v_row := coalesce(v_new, v_old);
    v_verb := CASE TG_OP WHEN 'INSERT' THEN TG_ARGV[3] WHEN 'UPDATE' THEN 'update' ELSE TG_ARGV[4] END;
    PERFORM whk.audit_sql_write(TG_ARGV[0] || '.' || v_verb, TG_ARGV[0], v_row ->> TG_ARGV[1],
                                CASE WHEN TG_ARGV[2] <> '' THEN (v_row ->> TG_ARGV[2])::bigint END,
                                v_old, v_new);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.audit_sql_change() IS
    'Trigger: audit a configuration change made in SQL (not by an API or dispatcher connection), same transaction.';

CREATE TRIGGER whk_01_webhooks_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_01_webhooks
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('webhook', 'id', 'consumer_id', 'create', 'delete');
CREATE TRIGGER whk_04_assinantes_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_04_assinantes
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('consumer', 'id', 'id', 'create', 'delete');
CREATE TRIGGER whk_02_eventos_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_02_eventos
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('event_type', 'name', '', 'register', 'delete');
-- Target id: the event type's id (a transform is known by its type and its two majors, all in `after`).
CREATE TRIGGER whk_02_eventos_transforms_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_02_eventos_transforms
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('event_transform', 'event_type_id', '', 'register', 'delete');
CREATE TRIGGER capture_config_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.capture_config
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('capture', 'tbl', '', 'enable', 'disable');
CREATE TRIGGER whk_05_configuracoes_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_05_configuracoes
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('setting', 'key', '', 'create', 'delete');
-- <<< sql/triggers/audit_sql_change.sql

-- >>> sql/triggers/dispatchers_idle_refresh.sql
-- whk.dispatchers_idle_refresh: keep whk.dispatcher_idle_until equal to "max(heartbeat_at) + 60 s over idle
-- dispatchers" (0 when none) after every change of whk.dispatchers: whk.dispatcher_set_idle, the
-- dispatchers' own heartbeats and their removal all go through it, so capture triggers can test idleness
-- without a query. Refreshes are serialised by an advisory lock held to commit, so each one computes from
-- everything committed before it and the last committer's value stands. setval is not transactional: a
-- rolled back change can leave the cache stale until the next change (at worst a spurious NOTIFY, or a
-- missed one that the dispatcher's polling covers).
CREATE OR REPLACE FUNCTION whk.dispatchers_idle_refresh()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('whk.dispatcher_idle_until'));
    PERFORM setval('whk.dispatcher_idle_until',
                   coalesce((SELECT ceil(extract(epoch FROM max(d.heartbeat_at)))::bigint + 60
                               FROM whk.dispatchers d WHERE d.idle), 0));
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.dispatchers_idle_refresh() IS
    'Trigger: recompute whk.dispatcher_idle_until (idle dispatchers'' max heartbeat + 60 s) after dispatchers change.';

CREATE TRIGGER dispatchers_idle_refresh
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON whk.dispatchers
    FOR EACH STATEMENT EXECUTE FUNCTION whk.dispatchers_idle_refresh();
-- <<< sql/triggers/dispatchers_idle_refresh.sql

-- >>> sql/triggers/webhook_needs_secret.sql
-- Never unsigned: whk_01_webhooks.needs_secret_since is derived, never trusted from the writer. Any INSERT
-- (the API's, a DBA's in SQL) starts without a secret; an UPDATE that touches the column gets it recomputed
-- from whk.webhook_secrets (set while no current secret exists, the first time kept).
CREATE OR REPLACE FUNCTION whk.webhook_needs_secret()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM whk.webhook_secrets s
                                    WHERE s.webhook_id = NEW.id AND s.expires_at IS NULL) THEN
        NEW.needs_secret_since := NULL;
    ELSE
        NEW.needs_secret_since := coalesce(CASE WHEN TG_OP = 'UPDATE' THEN OLD.needs_secret_since END,
                                           clock_timestamp());
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.webhook_needs_secret() IS
    'Trigger: derive whk_01_webhooks.needs_secret_since (set while the webhook has no current signing secret).';

CREATE TRIGGER whk_01_webhooks_needs_secret
    BEFORE INSERT OR UPDATE OF needs_secret_since ON whk.whk_01_webhooks
    FOR EACH ROW EXECUTE FUNCTION whk.webhook_needs_secret();

-- A webhook that needs a secret at COMMIT gets the provisioning job queued (whk.enqueue_secret_provisioning).
-- Deferred, so the API's create (the webhook row, then its secret, in one transaction) queues nothing.
CREATE OR REPLACE FUNCTION whk.webhook_request_secret()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    PERFORM whk.enqueue_secret_provisioning(NEW.id);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.webhook_request_secret() IS
    'Constraint trigger: at commit, queue the provision_secret job of a webhook still without a signing secret.';

CREATE CONSTRAINT TRIGGER whk_01_webhooks_request_secret
    AFTER INSERT OR UPDATE OF needs_secret_since ON whk.whk_01_webhooks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.needs_secret_since IS NOT NULL)
    EXECUTE FUNCTION whk.webhook_request_secret();

-- A secret added, removed, expired by hand or moved: the webhook's needs_secret_since follows (the UPDATE
-- only touches the column; whk.webhook_needs_secret computes it, and only when the state changes).
CREATE OR REPLACE FUNCTION whk.webhook_secrets_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    UPDATE whk.whk_01_webhooks w SET needs_secret_since = NULL
    WHERE w.id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.webhook_id END,
                   CASE WHEN TG_OP <> 'DELETE' THEN NEW.webhook_id END)
      AND (w.needs_secret_since IS NULL) <> EXISTS (SELECT 1 FROM whk.webhook_secrets s
                                                    WHERE s.webhook_id = w.id AND s.expires_at IS NULL);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.webhook_secrets_changed() IS
    'Trigger: keep whk_01_webhooks.needs_secret_since in step with the webhook''s signing secrets.';

CREATE TRIGGER webhook_secrets_changed
    AFTER INSERT OR DELETE OR UPDATE OF webhook_id, expires_at ON whk.webhook_secrets
    FOR EACH ROW EXECUTE FUNCTION whk.webhook_secrets_changed();
-- <<< sql/triggers/webhook_needs_secret.sql

-- >>> sql/triggers/whk_02_eventos_versoes_check_path.sql
-- whk.event_version_check_path: compile a schema version's fast check (whk.jsonschema_jsonpath) whenever
-- its schema is written, so validation never compiles at run time and the stored check always matches
-- the stored schema.
CREATE OR REPLACE FUNCTION whk.event_version_check_path()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    NEW.check_path := whk.jsonschema_jsonpath(NEW.schema);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.event_version_check_path() IS
    'Trigger: keep whk_02_eventos_versoes.check_path compiled from schema.';

CREATE TRIGGER whk_02_eventos_versoes_check_path
    BEFORE INSERT OR UPDATE OF schema ON whk.whk_02_eventos_versoes
    FOR EACH ROW EXECUTE FUNCTION whk.event_version_check_path();

-- Versions written before this trigger existed (the seeded catalog of a fresh install, or every version
-- of an upgraded one) are compiled now; the trigger does it.
UPDATE whk.whk_02_eventos_versoes SET schema = schema WHERE check_path IS NULL;
-- <<< sql/triggers/whk_02_eventos_versoes_check_path.sql

-- >>> sql/triggers/whk_05_configuracoes_bounds.sql
-- whk.config_value_refuse: a global setting written out of bounds with plain SQL (the DBA's interface to
-- whk_05_configuracoes) is refused with what is wrong and where the bounds are, rather than with the bare
-- CHECK violation of whk_05_configuracoes_value_bounds (which stays, and names the same constraint).
CREATE OR REPLACE FUNCTION whk.config_value_refuse()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text := whk.config_value_problem(NEW.key, NEW.value);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk_05_configuracoes %: %', NEW.key, v_problem
            USING ERRCODE = 'check_violation', SCHEMA = 'whk', TABLE = 'whk_05_configuracoes',
                  CONSTRAINT = 'whk_05_configuracoes_value_bounds',
                  HINT = 'Every setting''s bounds: docs/configuration.md, "Bounds of every setting". '
                         'SELECT whk.config_value_problem(key, value) checks a value before it is written.';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.config_value_refuse() IS
    'Trigger: refuse an out-of-bounds whk_05_configuracoes value naming the problem (see config_value_problem).';

CREATE TRIGGER whk_05_configuracoes_bounds
    BEFORE INSERT OR UPDATE OF key, value ON whk.whk_05_configuracoes
    FOR EACH ROW EXECUTE FUNCTION whk.config_value_refuse();
-- <<< sql/triggers/whk_05_configuracoes_bounds.sql

-- >>> sql/views/kpi_dispatchers.sql
-- whk.kpi_dispatchers: dispatcher processes and the age of their last heartbeat. A dispatcher is live while
-- heartbeat_age_s is within WHK_LEASE_SECONDS and it is not stopping (the lease is a process setting, so
-- readers apply it).
CREATE OR REPLACE VIEW whk.kpi_dispatchers AS
SELECT x.id, x.hostname, x.pid, x.started_at, x.stopping,
       extract(epoch FROM clock_timestamp() - x.heartbeat_at)::double precision AS heartbeat_age_s
FROM whk.dispatchers x;
COMMENT ON VIEW whk.kpi_dispatchers IS 'Dispatcher processes with the age of their last heartbeat.';
-- <<< sql/views/kpi_dispatchers.sql

-- >>> sql/views/kpi_platform.sql
-- whk.kpi_platform: one row of platform-wide figures: how long the oldest unrouted outbox event has waited
-- (capture stalled: the dispatcher routes events into deliveries), webhooks disabled, breakers open,
-- webhooks waiting for a signing secret.
-- The oldest unrouted event is found through the pending index in id order (ids follow commit order
-- closely enough for an age alarm).
CREATE OR REPLACE VIEW whk.kpi_platform AS
SELECT (SELECT greatest(extract(epoch FROM clock_timestamp() - o.created_at)::double precision, 0)
        FROM whk.outbox o WHERE o.status = 'pending' ORDER BY o.id LIMIT 1) AS oldest_unrouted_age_s,
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.status = 'disabled' AND w.deleted_at IS NULL) AS webhooks_disabled,
       (SELECT count(*) FROM whk.webhook_runtime r WHERE r.breaker_state = 'open') AS breakers_open,
       -- Never unsigned: webhooks whose deliveries wait for a signing secret (the partial index).
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL) AS webhooks_needs_secret;
COMMENT ON VIEW whk.kpi_platform IS
    'Platform-wide figures: oldest unrouted event age, disabled webhooks, open breakers, webhooks waiting for a secret.';
-- <<< sql/views/kpi_platform.sql

-- >>> sql/views/kpi_slo.sql
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
-- <<< sql/views/kpi_slo.sql

-- >>> sql/views/kpi_webhook_state.sql
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
-- <<< sql/views/kpi_webhook_state.sql

-- >>> sql/views/kpi_webhook_window.sql
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
-- <<< sql/views/kpi_webhook_window.sql

-- >>> sql/views/outbox_events.sql
-- whk.outbox_events: the outbox with each event's delivered body as `payload` (built by
-- whk.event_envelope; since migration 0013 the outbox stores only the event's data). What DBAs and tests
-- read instead of assembling the envelope themselves. Columns are listed, not o.*, so the view is the same
-- whatever the column order of whk.outbox (a fresh install and a migrated database differ there).
CREATE OR REPLACE VIEW whk.outbox_events AS
SELECT o.id, o.event_id, o.event_type, o.event_version, o.event_key, o.source_table, o.operation, o.txid,
       o.deliver_at, o.created_at, o.status, o.routed_at, o.commit_seq, o.valid, o.validation_error,
       o.data, o.old_data, o.changed, o.occurred_at,
       whk.event_envelope(o) AS payload
FROM whk.outbox o;
COMMENT ON VIEW whk.outbox_events IS
    'whk.outbox with the delivered body (Standard Webhooks envelope) of each event as payload.';
-- <<< sql/views/outbox_events.sql

-- >>> sql/constraints/setting_bounds.sql
-- Bounds of the JSON settings, as CHECKs that call the whk.*_problem functions (a fresh install adds them after
-- the functions). The plain numeric columns carry their bounds in their own table files. Every bound is listed
-- in docs/configuration.md ("Bounds of every setting"); the API schema has the same ones. Alert rules carry
-- theirs as jsonpath CHECKs in their own table file (sql/schema/710_operations.sql).
ALTER TABLE whk.whk_01_webhooks
    ADD CONSTRAINT whk_01_webhooks_retry_policy_bounds CHECK (whk.retry_policy_problem(retry_policy) IS NULL),
    ADD CONSTRAINT whk_01_webhooks_breaker_config_bounds CHECK (whk.breaker_config_problem(breaker_config) IS NULL);
ALTER TABLE whk.whk_05_configuracoes
    ADD CONSTRAINT whk_05_configuracoes_value_bounds CHECK (whk.config_value_problem(key, value) IS NULL);
ALTER TABLE whk.whk_04_assinantes
    ADD CONSTRAINT whk_04_assinantes_quiet_hours_bounds CHECK (whk.quiet_hours_problem(quiet_hours) IS NULL);
-- <<< sql/constraints/setting_bounds.sql

COMMIT;
