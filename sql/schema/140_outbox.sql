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
