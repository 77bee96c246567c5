-- Event catalog and event history queries (api/events/repository.py is the only caller).
-- The catalog (whk_02_eventos) is shared by every tenant; history and statistics are tenant-scoped:
-- admins read the outbox, a consumer reads the events that were routed to its own webhooks.

-- name: list_types :many
SELECT e.id, e.name, e.description, e.category, e.strict, e.current_major, e.current_minor,
       e.metadata, e.delivery_settings, e.fire_count, e.last_fired_at, e.created_at, e.updated_at
FROM whk.whk_02_eventos e
WHERE {where}
ORDER BY {order}
LIMIT %(limit)s

-- name: get_type :one
SELECT e.id, e.name, e.description, e.category, e.strict, e.current_major, e.current_minor,
       e.metadata, e.delivery_settings, e.fire_count, e.last_fired_at, e.created_at, e.updated_at
FROM whk.whk_02_eventos e
WHERE e.name = %(name)s

-- name: type_versions :many
SELECT v.major, v.minor, v.schema, v.changelog, v.created_at
FROM whk.whk_02_eventos_versoes v
WHERE v.event_type_id = %(id)s
ORDER BY v.major DESC, v.minor DESC

-- name: type_transforms :many
-- Registered in SQL only (whk.register_event_transform): the function runs inside the dispatcher.
SELECT t.from_major, t.to_major, t.function, t.created_at, t.updated_at
FROM whk.whk_02_eventos_transforms t
WHERE t.event_type_id = %(id)s
ORDER BY t.from_major DESC, t.to_major DESC

-- name: type_schema :one
-- The schema payloads are checked against: the latest minor of the requested (or current) major.
SELECT v.major, v.minor, v.schema
FROM whk.whk_02_eventos_versoes v
JOIN whk.whk_02_eventos e ON e.id = v.event_type_id
WHERE e.name = %(name)s AND v.major = coalesce(%(major)s::integer, e.current_major)
ORDER BY v.minor DESC
LIMIT 1

-- name: type_counters_admin :one
SELECT count(*) FILTER (WHERE o.created_at >= now() - interval '24 hours') AS events_24h,
       count(*) FILTER (WHERE o.created_at >= now() - interval '7 days') AS events_7d,
       count(*) FILTER (WHERE o.status = 'pending') AS pending_routing,
       count(*) FILTER (WHERE o.valid IS false) AS invalid
FROM whk.outbox o
WHERE o.event_type = %(name)s AND o.created_at >= now() - interval '7 days'

-- name: type_delivery_counters :many
SELECT d.status, count(*) AS n
FROM whk.whk_03_entregas d
WHERE d.event_type = %(name)s AND (%(tenant)s::bigint IS NULL OR d.consumer_id = %(tenant)s::bigint)
GROUP BY d.status

-- name: type_subscribers :one
SELECT count(*)
FROM whk.whk_01_webhooks w
WHERE w.deleted_at IS NULL AND whk.event_type_matches(w.event_types, %(name)s)
  AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)

-- name: register_type :one
-- Capture's registry function: new type = 1.0, compatible change = next minor, breaking = refused unless
-- new_major; a new major stranding pinned webhooks = refused unless force. PostgreSQL's message explains
-- a refusal.
SELECT whk.register_event_type(%(name)s, %(schema)s, %(description)s, %(strict)s, %(new_major)s,
                               %(category)s, %(changelog)s, %(force)s)

-- name: emit :one
-- The same path as a captured event: one outbox row in this transaction (and a wake-up).
SELECT whk.emit(%(type)s, %(data)s, %(key)s, %(deliver_at)s)

-- name: history_admin :many
SELECT o.id, o.event_id, o.event_type, o.event_version, o.event_key, o.operation, o.source_table,
       o.status, o.valid, o.validation_error, o.deliver_at, o.created_at, o.routed_at, whk.event_envelope(o) AS payload,
       (SELECT count(*) FROM whk.whk_03_entregas d WHERE d.outbox_id = o.id AND d.event_created_at = o.created_at)
           AS deliveries
FROM whk.outbox o
WHERE {where}
ORDER BY {order}
LIMIT %(limit)s

-- name: history_tenant :many
-- A consumer's history: the events routed to its webhooks, one row per event. Read from the tenant's own
-- deliveries in (event_created_at, outbox_id) order (delivery_history_consumer_event_idx, merged with the
-- queue's), grouped as they stream, so a page costs the same however many events other tenants receive.
SELECT o.id, o.event_id, o.event_type, o.event_version, o.event_key, o.operation, o.source_table,
       o.status, o.valid, o.validation_error, o.deliver_at, o.created_at, o.routed_at, whk.event_envelope(o) AS payload,
       x.deliveries
FROM (
    SELECT d.event_created_at, d.outbox_id, count(*) AS deliveries
    FROM whk.whk_03_entregas d
    WHERE d.consumer_id = %(tenant)s AND {where}
    GROUP BY d.event_created_at, d.outbox_id
    ORDER BY {order}
    LIMIT %(limit)s
) x
JOIN whk.outbox o ON o.id = x.outbox_id AND o.created_at = x.event_created_at
ORDER BY {outer_order}

-- name: stats_admin :many
SELECT o.event_type, date_trunc(%(bucket)s, o.created_at, 'UTC') AS bucket, count(*) AS events
FROM whk.outbox o
WHERE o.created_at >= %(since)s AND o.created_at < %(until)s
  AND (%(type)s::text IS NULL OR o.event_type = %(type)s::text)
GROUP BY 1, 2
ORDER BY 2, 1

-- name: stats_tenant :many
SELECT d.event_type, date_trunc(%(bucket)s, d.event_created_at, 'UTC') AS bucket, count(DISTINCT d.event_id) AS events
FROM whk.whk_03_entregas d
WHERE d.consumer_id = %(tenant)s AND d.event_created_at >= %(since)s AND d.event_created_at < %(until)s
  AND (%(type)s::text IS NULL OR d.event_type = %(type)s::text)
GROUP BY 1, 2
ORDER BY 2, 1
