-- Webhook resource queries (api/webhooks/repository.py is the only caller).
-- Every statement carries the tenant: %(tenant)s is NULL for admins, else the caller's consumer id, so
-- another consumer's webhook simply is not found (404) and nothing is changed.

-- name: webhook_columns :fragment
w.id, w.consumer_id, w.name, w.description, w.url, w.http_method, w.event_types, w.filter::text AS filter,
w.payload_version, w.headers, w.auth_type, w.auth_header_name, (w.auth_credential_enc IS NOT NULL) AS has_credential,
w.status, w.disabled_reason, w.disabled_at, w.delivery_mode, w.batch_size, w.batch_window_ms, w.delay_seconds,
w.ordering_key_path::text AS ordering_key_path, w.supersede_by_key, w.urgent, w.retry_policy, w.timeout_ms,
w.rate_limit_per_second::float8 AS rate_limit_per_second, w.rate_limit_burst, w.max_in_flight, w.require_ack,
w.ack_timeout_seconds, w.breaker_config, w.metadata, w.created_at, w.updated_at, w.quarantined_at,
w.quarantine_stage, w.quarantine_sqlstate, w.quarantine_reason

-- name: list_webhooks :many
SELECT {columns}
FROM whk.whk_01_webhooks w
WHERE w.deleted_at IS NULL AND {where}
ORDER BY {order}
LIMIT %(limit)s

-- name: get_webhook :one
SELECT {columns}
FROM whk.whk_01_webhooks w
WHERE w.id = %(id)s AND w.deleted_at IS NULL
  AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)

-- name: lock_webhook :one
SELECT {columns}
FROM whk.whk_01_webhooks w
WHERE w.id = %(id)s AND w.deleted_at IS NULL
  AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)
FOR UPDATE

-- name: consumer_exists :one
SELECT EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.id = %(id)s)

-- name: check_jsonpath :one
-- PostgreSQL itself compiles the expression: its message is what the client gets on a syntax error.
SELECT %(expr)s::jsonpath::text

-- name: insert_webhook :one
INSERT INTO whk.whk_01_webhooks (
    consumer_id, name, description, url, http_method, event_types, filter, payload_version, headers,
    auth_type, auth_header_name, status, delivery_mode, batch_size, batch_window_ms, delay_seconds,
    ordering_key_path, retry_policy, timeout_ms, rate_limit_per_second, rate_limit_burst, max_in_flight,
    require_ack, ack_timeout_seconds, breaker_config, metadata, supersede_by_key, urgent)
VALUES (
    %(consumer_id)s, %(name)s, %(description)s, %(url)s, %(http_method)s, %(event_types)s,
    %(filter)s::jsonpath, %(payload_version)s, %(headers)s, %(auth_type)s, %(auth_header_name)s, %(status)s,
    %(delivery_mode)s, %(batch_size)s, %(batch_window_ms)s, %(delay_seconds)s, %(ordering_key_path)s::jsonpath,
    %(retry_policy)s, %(timeout_ms)s, %(rate_limit_per_second)s, %(rate_limit_burst)s, %(max_in_flight)s,
    %(require_ack)s, %(ack_timeout_seconds)s, %(breaker_config)s, %(metadata)s, %(supersede_by_key)s, %(urgent)s)
RETURNING id

-- name: set_credential :exec
UPDATE whk.whk_01_webhooks SET auth_credential_enc = %(enc)s WHERE id = %(id)s

-- name: update_webhook :exec
-- {assignments} is composed from the allow-listed column names of WebhookUpdate only.
UPDATE whk.whk_01_webhooks w
SET {assignments}, updated_at = clock_timestamp()
WHERE w.id = %(id)s

-- name: pause_webhook :one
SELECT whk.pause_webhook(%(id)s)

-- name: resume_webhook :one
-- Releases parked deliveries and closes the breaker (engine function).
SELECT whk.resume_webhook(%(id)s)

-- name: clear_quarantine :one
-- The dispatcher claims for the webhook again; its waiting deliveries are due at once (engine function).
SELECT whk.clear_webhook_quarantine(%(id)s)

-- name: trace_webhook :one
-- The dispatchers read the flag with the webhook's settings: on within seconds, off by itself (engine function).
SELECT whk.trace_webhook(%(id)s, %(seconds)s)

-- name: disable_webhook :one
SELECT whk.disable_webhook(%(id)s, %(reason)s)

-- name: delete_webhook :one
-- Soft delete, unfinished deliveries cancelled, signing secrets dropped (engine function).
SELECT d.deleted, d.cancelled FROM whk.delete_webhook(%(id)s) d

-- name: valid_secrets :many
-- Every key that signs right now: the current one and old ones still inside their grace period.
SELECT s.id, s.key_id, s.secret_enc, s.created_at, s.expires_at
FROM whk.webhook_secrets s
WHERE s.webhook_id = %(webhook_id)s AND (s.expires_at IS NULL OR s.expires_at > clock_timestamp())
ORDER BY s.created_at DESC, s.id DESC

-- name: list_attempts :many
SELECT t.id, t.delivery_id, t.webhook_id, t.attempt_no, t.batch_id, t.dispatcher_id, t.started_at,
       t.duration_ms, t.request_method, t.request_url, t.request_headers, t.request_body_sha256, t.request_body_size,
       t.response_status, t.response_headers, t.response_body, t.response_truncated, t.error_class,
       t.error_detail, t.outcome, d.event_id, d.event_type
FROM whk.whk_03_entregas_tentativas t
-- A finished delivery finished after its attempt started: only those days of the history are probed.
JOIN whk.whk_03_entregas d ON d.id = t.delivery_id AND (d.finished_at IS NULL OR d.finished_at >= t.started_at)
WHERE {where}
ORDER BY {order}
LIMIT %(limit)s

-- name: test_envelope :one
-- A test event's body: the envelope every delivery carries (whk.event_envelope), for an event emitted now
-- with this type and data (a record only: nothing is written to the outbox).
SELECT whk.event_envelope(jsonb_populate_record(NULL::whk.outbox, jsonb_build_object(
           'event_type', %(event_type)s::text, 'operation', 'EMIT', 'data', %(data)s::jsonb,
           'created_at', clock_timestamp())))::text

-- name: event_example :one
-- The simulator's default data: the first example of the type's current schema, if it has one.
SELECT v.schema -> 'examples' -> 0
FROM whk.whk_02_eventos e
JOIN whk.whk_02_eventos_versoes v
  ON v.event_type_id = e.id AND v.major = e.current_major AND v.minor = e.current_minor
WHERE e.name = %(name)s

-- name: get_credential :one
SELECT w.auth_credential_enc FROM whk.whk_01_webhooks w WHERE w.id = %(id)s
