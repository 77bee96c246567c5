-- Queue sources (whk.queue_source): one message → one event under its contract, in the batch's transaction.

-- name: emit_checked :many
-- The router's check (whk.validate_payload) on the envelope whk.emit will write; the event is emitted only
-- when it passes, so a message that breaks its contract costs no rollback (CASE evaluates the volatile
-- whk.emit only on its own branch). Unknown types are named by the check too.
SELECT v.problem,
       CASE WHEN v.problem IS NULL
            THEN whk.emit(%(type)s::text, %(data)s::jsonb, %(key)s::text)::text
       END AS event_id
FROM (SELECT whk.validate_payload(
                 %(type)s::text, NULL,
                 jsonb_build_object('type', %(type)s::text, 'timestamp', to_jsonb(statement_timestamp()),
                                    'data', %(data)s::jsonb)) AS problem) v
