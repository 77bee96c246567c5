-- Audit trail queries (caller: api/audit.py).

-- name: insert_audit :exec
INSERT INTO whk.audit_log
    (actor, consumer_id, action, target_type, target_id, before, after, request_id, source_ip)
VALUES (%(actor)s, %(consumer_id)s, %(action)s, %(target_type)s, %(target_id)s, %(before)s, %(after)s,
        %(request_id)s, %(source_ip)s::inet);

-- name: list_audit :many
-- Keyset page, newest first. Every filter is optional (NULL = no filter); %(tenant)s is NULL for admins.
SELECT id, occurred_at, actor, consumer_id, action, target_type, target_id, before, after, request_id,
       host(source_ip) AS source_ip
FROM whk.audit_log
WHERE (%(tenant)s::bigint IS NULL OR consumer_id = %(tenant)s::bigint)
  AND (%(consumer_id)s::bigint IS NULL OR consumer_id = %(consumer_id)s::bigint)
  AND (%(actor)s::text IS NULL OR actor = %(actor)s::text)
  AND (%(action)s::text IS NULL OR action = %(action)s::text OR action LIKE %(action_prefix)s::text)
  AND (%(target_type)s::text IS NULL OR target_type = %(target_type)s::text)
  AND (%(target_id)s::text IS NULL OR target_id = %(target_id)s::text)
  AND (%(request_id)s::text IS NULL OR request_id = %(request_id)s::text)
  AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s::timestamptz)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;
