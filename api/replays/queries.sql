-- Replays: the state changes are whk.replay_start / whk.replay_cancel (sql/functions/delivery); the job
-- worker works them through with whk.replay_step.

-- name: horizon :one
SELECT whk.retention_horizon('outbox')

-- name: check_jsonpath :one
SELECT %(expr)s::jsonpath::text

-- name: count_events :one
SELECT count(*) FROM whk.replay_events(%(webhook_id)s, %(since)s, %(until)s, %(types)s::text[],
                                       %(predicate)s::jsonpath)

-- name: start :one
SELECT whk.replay_start(%(webhook_id)s, %(since)s, %(until)s, %(types)s::text[], %(predicate)s::jsonpath,
                        %(created_by)s)

-- name: get_replay :one
SELECT r.id, r.webhook_id, r.consumer_id, r.since, r.until, r.event_types, r.predicate::text AS predicate,
       r.total, r.done, r.created, r.requeued, r.state, r.error, r.created_by, r.created_at, r.updated_at,
       r.finished_at
FROM whk.replays r
WHERE r.id = %(id)s AND (%(tenant)s::bigint IS NULL OR r.consumer_id = %(tenant)s::bigint)

-- name: cancel :one
SELECT whk.replay_cancel(%(id)s)
