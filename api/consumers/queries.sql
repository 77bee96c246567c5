-- Consumer (tenant) queries (api/consumers/repository.py is the only caller).

-- name: consumer_columns :fragment
a.id, a.name, a.description, a.contact_name, a.contact_email, a.status, a.auth_settings,
a.allowed_ips::text[] AS allowed_ips, a.rate_limit_per_second::float8 AS rate_limit_per_second,
a.rate_limit_burst, a.api_rate_limit_per_minute, a.quota_deliveries_per_day, a.delivery_preferences,
a.quiet_hours, a.metadata, a.last_activity_at, a.usage_deliveries_total, a.usage_deliveries_failed, a.created_at, a.updated_at

-- name: list_consumers :many
SELECT {columns}
FROM whk.whk_04_assinantes a
WHERE {where}
ORDER BY {order}
LIMIT %(limit)s

-- name: get_consumer :one
SELECT {columns}
FROM whk.whk_04_assinantes a
WHERE a.id = %(id)s AND (%(tenant)s::bigint IS NULL OR a.id = %(tenant)s::bigint)

-- name: lock_consumer :one
SELECT {columns}
FROM whk.whk_04_assinantes a
WHERE a.id = %(id)s AND (%(tenant)s::bigint IS NULL OR a.id = %(tenant)s::bigint)
FOR UPDATE

-- name: insert_consumer :one
INSERT INTO whk.whk_04_assinantes (
    name, description, contact_name, contact_email, status, auth_settings, allowed_ips, rate_limit_per_second,
    rate_limit_burst, api_rate_limit_per_minute, quota_deliveries_per_day, delivery_preferences, quiet_hours,
    metadata)
VALUES (
    %(name)s, %(description)s, %(contact_name)s, %(contact_email)s, %(status)s, %(auth_settings)s,
    %(allowed_ips)s::cidr[], %(rate_limit_per_second)s, %(rate_limit_burst)s, %(api_rate_limit_per_minute)s,
    %(quota_deliveries_per_day)s, %(delivery_preferences)s, %(quiet_hours)s, %(metadata)s)
RETURNING id

-- name: update_consumer :exec
-- {assignments} is composed from the allow-listed field names of ConsumerUpdate only.
UPDATE whk.whk_04_assinantes a
SET {assignments}, updated_at = clock_timestamp()
WHERE a.id = %(id)s

-- name: set_consumer_status :one
-- Engine function: the status gates delivery too (parks or releases the consumer's deliveries).
SELECT changed FROM whk.set_consumer_status(%(id)s, %(status)s)

-- name: consumer_references :one
SELECT (SELECT count(*) FROM whk.whk_01_webhooks w WHERE w.consumer_id = %(id)s)
     + (SELECT count(*) FROM whk.whk_03_entregas d WHERE d.consumer_id = %(id)s)

-- name: delete_consumer :exec
-- Only consumers no webhook or delivery refers to; their alerts go with them (API keys cascade).
WITH al AS (DELETE FROM whk.whk_06_alertas WHERE consumer_id = %(id)s)
DELETE FROM whk.whk_04_assinantes a WHERE a.id = %(id)s

-- name: quiet_hours_problem :one
-- The database's own check (the table's CHECK calls it): its time zone data decides what a zone is.
SELECT whk.quiet_hours_problem(%(quiet_hours)s::jsonb)
