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
