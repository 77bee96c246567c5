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
