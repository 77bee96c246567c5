-- name: attempts_after :many
-- The attempt log after the tail's cursor, oldest first, with the event each attempt carried (a batch
-- attempt names its lowest delivery and counts its members).
SELECT a.id, a.started_at, a.webhook_id, a.delivery_id,
       coalesce(cardinality(a.delivery_ids), 1) AS deliveries,
       a.attempt_no, a.outcome, a.response_status, a.error_class, a.duration_ms, a.dispatcher_id,
       d.event_id, d.event_type, d.status AS delivery_status
FROM whk.whk_03_entregas_tentativas a
LEFT JOIN whk.whk_03_entregas d ON d.id = a.delivery_id
WHERE a.id > %(after)s
ORDER BY a.id
LIMIT %(limit)s

-- name: start_after :one
-- Where a tail starts: after the newest attempt, or before the last %(last)s of them.
SELECT coalesce(min(t.id) - 1, (SELECT max(id) FROM whk.whk_03_entregas_tentativas), 0)
FROM (SELECT id FROM whk.whk_03_entregas_tentativas ORDER BY id DESC LIMIT %(last)s) t
