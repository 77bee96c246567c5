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
