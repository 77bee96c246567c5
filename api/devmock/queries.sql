-- Mock endpoint queries (api/devmock/controller.py is the only caller).

-- name: record :one
SELECT whk.mock_record(%(name)s, %(method)s, %(headers)s, %(body)s, %(body_size)s, %(status)s)

-- name: list_received :many
SELECT m.id, m.mock_name, m.received_at, m.method, m.headers, m.body, m.body_size, m.replied_status
FROM whk.mock_requests m
WHERE m.mock_name = %(name)s
ORDER BY m.id DESC
LIMIT %(limit)s

-- name: clear :one
WITH gone AS (DELETE FROM whk.mock_requests m WHERE m.mock_name = %(name)s RETURNING 1)
SELECT count(*) FROM gone
