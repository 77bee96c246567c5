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
-- Append-only (whk.record_outcomes writes each row once) and range-partitioned by started_at, one
-- partition per day made ahead by whk.create_partitions, so retention drops whole expired days
-- (whk.drop_partitions) instead of deleting rows; the default partition guarantees an insert never fails
-- for lack of a partition.
CREATE TABLE whk.whk_03_entregas_tentativas (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
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
    outcome             text        NOT NULL,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
COMMENT ON TABLE whk.whk_03_entregas_tentativas IS 'Attempt log: full request/response of every delivery attempt.';
CREATE TABLE whk.whk_03_entregas_tentativas_default PARTITION OF whk.whk_03_entregas_tentativas DEFAULT;
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
