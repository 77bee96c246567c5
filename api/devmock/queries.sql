-- Mock endpoint queries (api/devmock/controller.py is the only caller).

-- name: record :one
SELECT whk.mock_record(%(name)s, %(method)s, %(headers)s, %(body)s, %(body_size)s, %(status)s)

-- name: credential_header_names :one
-- Every header name a webhook sends its outbound credential in (lower case): masked whatever it is called.
SELECT coalesce(array_agg(DISTINCT lower(w.auth_header_name)), '{}')
FROM whk.whk_01_webhooks w
WHERE w.auth_type = 'api_key' AND w.auth_header_name IS NOT NULL

-- name: list_received :many
SELECT m.id, m.mock_name, m.received_at, m.method, m.headers, m.body, m.body_size, m.replied_status
FROM whk.mock_requests m
WHERE m.mock_name = %(name)s
ORDER BY m.id DESC
LIMIT %(limit)s

-- name: clear :one
WITH gone AS (DELETE FROM whk.mock_requests m WHERE m.mock_name = %(name)s RETURNING 1)
SELECT count(*) FROM gone
