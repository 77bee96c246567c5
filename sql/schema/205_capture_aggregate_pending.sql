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
