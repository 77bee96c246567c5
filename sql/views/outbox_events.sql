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
