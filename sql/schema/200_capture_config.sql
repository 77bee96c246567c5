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
