-- API key queries (caller: api/keys.py).

-- name: insert_key :one
INSERT INTO whk.api_keys (prefix, secret_hash, consumer_id, is_admin, name, scopes, created_by, expires_at)
VALUES (%(prefix)s, %(secret_hash)s, %(consumer_id)s, %(is_admin)s, %(name)s, %(scopes)s, %(created_by)s,
        %(expires_at)s)
RETURNING id, prefix, consumer_id, is_admin, name, scopes, created_by, created_at, expires_at, revoked_at,
          last_used_at;

-- name: consumer_exists :one
SELECT status FROM whk.whk_04_assinantes WHERE id = %(consumer_id)s;

-- name: list_keys :many
-- %(tenant)s NULL = admin (all keys); keyset page by id.
SELECT id, prefix, consumer_id, is_admin, name, scopes, created_by, created_at, expires_at, revoked_at,
       last_used_at
FROM whk.api_keys
WHERE (%(tenant)s::bigint IS NULL OR consumer_id = %(tenant)s::bigint)
  AND (%(consumer_id)s::bigint IS NULL OR consumer_id = %(consumer_id)s::bigint)
  AND (%(include_revoked)s OR revoked_at IS NULL)
  AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s::bigint)
ORDER BY id
LIMIT %(limit)s;

-- name: get_key :one
SELECT id, prefix, consumer_id, is_admin, name, scopes, created_by, created_at, expires_at, revoked_at,
       last_used_at
FROM whk.api_keys
WHERE id = %(id)s AND (%(tenant)s::bigint IS NULL OR consumer_id = %(tenant)s::bigint)
FOR UPDATE;

-- name: revoke_key :one
UPDATE whk.api_keys SET revoked_at = now(), revoked_by = %(actor)s
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, prefix, consumer_id, is_admin, name, scopes, created_by, created_at, expires_at, revoked_at,
          last_used_at;

-- name: revoke_dev_keys :many
-- `whk up`'s development admin keys still valid (the name marks them), revoked before a new one is made.
UPDATE whk.api_keys SET revoked_at = now(), revoked_by = %(actor)s
WHERE is_admin AND name = %(name)s AND revoked_at IS NULL
RETURNING id, prefix, consumer_id, is_admin, name, scopes, created_by, created_at, expires_at, revoked_at,
          last_used_at;
