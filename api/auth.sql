-- Authentication queries (caller: api/auth.py). Run on a pooled autocommit connection before the handler.

-- name: key_by_prefix :one
SELECT k.id, k.secret_hash, k.consumer_id, k.is_admin, k.scopes,
       (k.revoked_at IS NOT NULL) AS revoked,
       (k.expires_at IS NOT NULL AND k.expires_at <= now()) AS expired,
       (k.last_used_at IS NULL OR k.last_used_at < now() - interval '60 seconds') AS touch,
       c.status AS consumer_status, c.allowed_ips::text[] AS allowed_ips, c.api_rate_limit_per_minute
FROM whk.api_keys k
LEFT JOIN whk.whk_04_assinantes c ON c.id = k.consumer_id
WHERE k.prefix = %(prefix)s;

-- name: consumer_for_jwt :one
SELECT status AS consumer_status, allowed_ips::text[] AS allowed_ips, api_rate_limit_per_minute
FROM whk.whk_04_assinantes WHERE id = %(consumer_id)s;

-- name: touch_key :exec
UPDATE whk.api_keys SET last_used_at = now()
WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds');

-- name: rate_limit_hit :one
SELECT allowed, limit_count, remaining, retry_after_s, reset_s
FROM whk.api_rate_limit_hit(%(subject)s, %(limit)s, %(window)s);
