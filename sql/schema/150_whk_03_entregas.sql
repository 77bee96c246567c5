-- Deliveries (entregas) live in two tables, one row per (event, webhook) in exactly one of them
-- (docs/delivery.md, "Data lifecycle"):
-- * whk.delivery_queue: the work that can still change (pending, in flight, awaiting an ack, parked, and
--   dead letters, which stay until retried or purged whatever the retention). Its size is the backlog, not
--   the history, so it carries only the indexes the claim and the pages of live work need.
-- * whk.delivery_history: finished deliveries (delivered, cancelled, superseded), written once, set-based,
--   by the statement that finishes them (whk.record_outcomes; whk.archive_deliveries for the rest), into
--   day partitions that retention drops whole (whk.drop_partitions). Never updated.
-- whk.whk_03_entregas, the spec's deliveries relation, is the view over both: the API's pages, the KPIs
-- and a DBA's queries read it; nothing writes through it.
CREATE TABLE whk.delivery_queue (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid        NOT NULL,
    outbox_id        bigint      NOT NULL,
    event_created_at timestamptz NOT NULL,
    event_type       text        NOT NULL,
    -- No foreign key to the webhook: webhooks are only ever soft-deleted (whk.delete_webhook cancels their
    -- live deliveries), and a per-row key check was a measurable part of every routed event's cost.
    webhook_id       bigint      NOT NULL,
    consumer_id      bigint      NOT NULL,
    -- The final statuses (delivered, cancelled, superseded) only exist inside the statement or function
    -- that finishes a row and moves it to whk.delivery_history (whk.archive_deliveries).
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
    -- attempted (whk.supersede_deliveries). Not a foreign key: retention may drop either row first.
    superseded_by    bigint,
    -- The body to send when it is not the event's own envelope (whk.event_envelope of the outbox row):
    -- * for a webhook pinned to a major (payload_version), the event rendered to that major, with its
    --   "version" member, written once at routing so every attempt sends the same bytes (docs/capture.md);
    -- * for a dead letter, its own copy of the envelope, written when it dies, so the outbox partition of
    --   its event can be dropped under it and a retry years later still sends the same bytes.
    payload          jsonb,
    -- Set while the delivery is parked because its body could not be rendered for the pinned major (no
    -- chain of transforms, or a transform raised): the reason. Only whk.render_parked_deliveries (run by
    -- whk.register_event_transform) releases such a delivery; resuming the webhook does not.
    render_problem   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE whk.delivery_queue IS
    'Live deliveries (pending, in flight, awaiting ack, parked, dead). webhook-id = event_id: stable across retries and replays.';

-- Fairness: the claim walks each webhook's own due deliveries (LATERAL), never one global FIFO.
CREATE INDEX delivery_queue_due_idx ON whk.delivery_queue (webhook_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX delivery_queue_lease_idx ON whk.delivery_queue (lease_until) WHERE status = 'in_flight';
CREATE INDEX delivery_queue_ack_idx ON whk.delivery_queue (ack_deadline) WHERE status = 'awaiting_ack';
-- Per-webhook in-flight cap: counted on every claim of the webhook.
CREATE INDEX delivery_queue_in_flight_idx ON whk.delivery_queue (webhook_id) WHERE status = 'in_flight';
-- Ordered lanes: the head of each (webhook, key) lane is the lowest commit_seq not yet finished.
CREATE INDEX delivery_queue_lane_idx ON whk.delivery_queue (webhook_id, ordering_key, commit_seq, id)
    WHERE status IN ('pending', 'in_flight', 'awaiting_ack') AND ordering_key IS NOT NULL;
-- Parked deliveries (disabled webhook, 410) come back when the webhook is resumed.
CREATE INDEX delivery_queue_parked_idx ON whk.delivery_queue (webhook_id) WHERE status = 'parked';
-- Deliveries waiting for a transform, found by type when one is registered: a tiny partial index.
CREATE INDEX delivery_queue_render_problem_idx ON whk.delivery_queue (event_type)
    WHERE render_problem IS NOT NULL;
-- The pages of live work: a webhook's or a tenant's deliveries newest first (merged with the history's
-- own indexes through whk.whk_03_entregas), and the dead-letter pages.
CREATE INDEX delivery_queue_webhook_idx ON whk.delivery_queue (webhook_id, id DESC);
CREATE INDEX delivery_queue_consumer_idx ON whk.delivery_queue (consumer_id, id DESC);
CREATE INDEX delivery_queue_dead_idx ON whk.delivery_queue (dead_at DESC, id DESC) WHERE status = 'dead';
-- An event's deliveries (event pages, replays, whether an outbox partition still holds live work).
CREATE INDEX delivery_queue_outbox_idx ON whk.delivery_queue (outbox_id, event_created_at);
CREATE INDEX delivery_queue_consumer_dead_idx ON whk.delivery_queue (consumer_id, dead_at DESC, id DESC)
    WHERE status = 'dead';

-- Finished deliveries: append-only, range-partitioned by finished_at (one partition per day, made ahead by
-- whk.create_partitions; the default partition guarantees an insert never fails for lack of one), so
-- retention drops whole expired days (whk.drop_partitions) and never deletes rows.
CREATE TABLE whk.delivery_history (
    -- The queue's columns, in its order and with its NOT NULLs (no identity, defaults or checks), then
    -- finished_at: a row moves with `INSERT ... SELECT q.*, <finished_at>` (a column added to the queue
    -- later is added here too, by the same migration).
    LIKE whk.delivery_queue,
    finished_at      timestamptz NOT NULL,
    CHECK (status IN ('delivered', 'cancelled', 'superseded')),
    PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at);
COMMENT ON TABLE whk.delivery_history IS
    'Finished deliveries (delivered, cancelled, superseded), written once, partitioned by day on finished_at.';
CREATE TABLE whk.delivery_history_default PARTITION OF whk.delivery_history DEFAULT;
-- The API's pages over finished work (each also has its live-queue half above or none: live work is the
-- backlog, small enough to sort).
CREATE INDEX delivery_history_webhook_idx ON whk.delivery_history (webhook_id, id DESC);
CREATE INDEX delivery_history_consumer_idx ON whk.delivery_history (consumer_id, id DESC);
CREATE INDEX delivery_history_outbox_idx ON whk.delivery_history (outbox_id, event_created_at);

-- The deliveries relation of the spec: live work and history, one row per (event, webhook). Read-only.
CREATE VIEW whk.whk_03_entregas AS
SELECT q.id, q.event_id, q.outbox_id, q.event_created_at, q.event_type, q.webhook_id, q.consumer_id, q.status,
       q.ordering_key, q.commit_seq, q.attempts, q.schedule_offset, q.attempt_ids, q.next_attempt_at,
       q.lease_until, q.claimed_by, q.batch_id, q.last_status_code, q.last_error, q.last_attempt_at,
       q.delivered_at, q.ack_deadline, q.acked_at, q.dead_at, q.dead_reason, q.superseded_by, q.payload,
       q.render_problem, q.created_at, q.updated_at, NULL::timestamptz AS finished_at
FROM whk.delivery_queue q
UNION ALL
SELECT h.id, h.event_id, h.outbox_id, h.event_created_at, h.event_type, h.webhook_id, h.consumer_id, h.status,
       h.ordering_key, h.commit_seq, h.attempts, h.schedule_offset, h.attempt_ids, h.next_attempt_at,
       h.lease_until, h.claimed_by, h.batch_id, h.last_status_code, h.last_error, h.last_attempt_at,
       h.delivered_at, h.ack_deadline, h.acked_at, h.dead_at, h.dead_reason, h.superseded_by, h.payload,
       h.render_problem, h.created_at, h.updated_at, h.finished_at
FROM whk.delivery_history h;
COMMENT ON VIEW whk.whk_03_entregas IS
    'All deliveries: whk.delivery_queue (live work, dead letters) UNION ALL whk.delivery_history (finished). '
    'One row per event x webhook; webhook-id = event_id: stable across retries and replays.';

-- Every HTTP attempt of a delivery (request/response, timing, error class): the debugging record.
-- Append-only (whk.record_outcomes writes each row once) and range-partitioned by started_at, one
-- partition per day made ahead by whk.create_partitions, so retention drops whole expired days
-- (whk.drop_partitions) instead of deleting rows; the default partition guarantees an insert never fails
-- for lack of a partition.
CREATE TABLE whk.whk_03_entregas_tentativas (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    -- Not a foreign key: the delivery moves from whk.delivery_queue to whk.delivery_history when it
    -- finishes, and each table's retention drops whole days on its own.
    delivery_id         bigint      NOT NULL,
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
COMMENT ON COLUMN whk.delivery_queue.attempt_ids IS
    'Attempts (whk_03_entregas_tentativas.id) this delivery took part in, oldest first.';
COMMENT ON COLUMN whk.whk_03_entregas_tentativas.delivery_ids IS
    'Members of a batch request (NULL when the request carried one delivery, delivery_id).';
COMMENT ON COLUMN whk.delivery_queue.payload IS
    'The body rendered for the webhook''s pinned major (with "version"), or a dead letter''s own copy; NULL = the event''s own envelope.';
COMMENT ON COLUMN whk.delivery_queue.render_problem IS
    'Why this parked delivery could not be rendered for its pinned major; released by whk.render_parked_deliveries.';
