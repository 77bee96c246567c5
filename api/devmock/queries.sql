-- Mock endpoint queries (api/devmock/controller.py is the only caller).

-- name: record :one
SELECT whk.mock_record(%(name)s, %(method)s, %(headers)s, %(body)s, %(body_size)s, %(status)s,
                       %(webhook_id)s, %(signature_ok)s, %(signature_reason)s)

-- name: credential_header_names :one
-- Every header name a webhook sends its outbound credential in (lower case): masked whatever it is called.
SELECT coalesce(array_agg(DISTINCT lower(w.auth_header_name)), '{}')
FROM whk.whk_01_webhooks w
WHERE w.auth_type = 'api_key' AND w.auth_header_name IS NOT NULL

-- name: signing_secrets :many
-- The current secrets of every webhook whose URL targets this mock (by path: the name is [A-Za-z0-9_-], so
-- it is safe inside the pattern), and the signature tolerance; a webhook without a live secret still
-- appears (secret_id NULL), so the verdict can say so.
SELECT w.id AS webhook_id, s.id AS secret_id, s.secret_enc,
       coalesce((SELECT (c.value #>> '{}')::integer FROM whk.whk_05_configuracoes c
                 WHERE c.key = 'security.signature_tolerance_s'), 300) AS tolerance
FROM whk.whk_01_webhooks w
LEFT JOIN whk.webhook_secrets s
       ON s.webhook_id = w.id AND (s.expires_at IS NULL OR s.expires_at > now())
WHERE w.url ~ ('/api/whk/dev/mock/' || %(name)s || '([?#]|$)')
ORDER BY w.id, s.created_at DESC

-- name: take_reply :one
-- The scenario's row lock orders concurrent requests to one mock, so request numbers are never shared.
UPDATE whk.mock_scenarios s SET served = s.served + 1
WHERE s.mock_name = %(name)s
RETURNING s.served - 1 AS n, s.step_status, s.step_delay_ms, s.step_drip_ms, s.then_status, s.then_delay_ms,
          s.then_drip_ms, s.fail_rate, s.fail_status, s.seed

-- name: get_scenario :one
SELECT s.step_status, s.step_delay_ms, s.step_drip_ms, s.then_status, s.then_delay_ms, s.then_drip_ms,
       s.fail_rate, s.fail_status, s.seed, s.served, s.updated_at
FROM whk.mock_scenarios s
WHERE s.mock_name = %(name)s

-- name: put_scenario :one
INSERT INTO whk.mock_scenarios AS s (mock_name, step_status, step_delay_ms, step_drip_ms, then_status,
                                     then_delay_ms, then_drip_ms, fail_rate, fail_status, seed)
VALUES (%(name)s, %(step_status)s, %(step_delay_ms)s, %(step_drip_ms)s, %(then_status)s, %(then_delay_ms)s,
        %(then_drip_ms)s, %(fail_rate)s, %(fail_status)s, %(seed)s)
ON CONFLICT (mock_name) DO UPDATE
SET step_status = excluded.step_status, step_delay_ms = excluded.step_delay_ms,
    step_drip_ms = excluded.step_drip_ms, then_status = excluded.then_status,
    then_delay_ms = excluded.then_delay_ms, then_drip_ms = excluded.then_drip_ms,
    fail_rate = excluded.fail_rate, fail_status = excluded.fail_status, seed = excluded.seed,
    served = 0, updated_at = now()
RETURNING s.step_status, s.step_delay_ms, s.step_drip_ms, s.then_status, s.then_delay_ms, s.then_drip_ms,
          s.fail_rate, s.fail_status, s.seed, s.served, s.updated_at

-- name: delete_scenario :one
WITH gone AS (DELETE FROM whk.mock_scenarios s WHERE s.mock_name = %(name)s RETURNING 1)
SELECT count(*) FROM gone

-- name: list_received :many
SELECT m.id, m.mock_name, m.received_at, m.method, m.headers, m.body, m.body_size, m.replied_status,
       m.webhook_id, m.signature_ok, m.signature_reason
FROM whk.mock_requests m
WHERE m.mock_name = %(name)s
ORDER BY m.id DESC
LIMIT %(limit)s

-- name: list_received_after :many
-- Tailing: what arrived after the last id the caller saw, oldest first.
SELECT m.id, m.mock_name, m.received_at, m.method, m.headers, m.body, m.body_size, m.replied_status,
       m.webhook_id, m.signature_ok, m.signature_reason
FROM whk.mock_requests m
WHERE m.mock_name = %(name)s AND m.id > %(after)s
ORDER BY m.id
LIMIT %(limit)s

-- name: clear :one
WITH gone AS (DELETE FROM whk.mock_requests m WHERE m.mock_name = %(name)s RETURNING 1)
SELECT count(*) FROM gone
