-- Signing-key management queries (api/security/repository.py is the only caller).

-- name: list_keys :many
-- Key ids and lifetimes only: the ciphertext is never selected here.
SELECT s.key_id, s.webhook_id, w.consumer_id, s.created_at, s.expires_at,
       CASE WHEN s.expires_at IS NULL THEN 'current'
            WHEN s.expires_at > clock_timestamp() THEN 'grace'
            ELSE 'expired' END AS state
FROM whk.webhook_secrets s
JOIN whk.whk_01_webhooks w ON w.id = s.webhook_id
WHERE w.deleted_at IS NULL
  AND (%(tenant)s::bigint IS NULL OR w.consumer_id = %(tenant)s::bigint)
  AND (%(webhook_id)s::bigint IS NULL OR s.webhook_id = %(webhook_id)s::bigint)
  AND (%(include_expired)s OR s.expires_at IS NULL OR s.expires_at > clock_timestamp())
ORDER BY s.webhook_id, s.created_at DESC, s.id DESC
LIMIT %(limit)s

-- name: security_setting :one
SELECT value FROM whk.whk_05_configuracoes WHERE key = %(key)s

-- name: start_grace :many
-- The current key starts its grace period: deliveries keep signing with it until expires_at.
UPDATE whk.webhook_secrets s
SET expires_at = clock_timestamp() + make_interval(secs => %(grace_s)s)
WHERE s.webhook_id = %(webhook_id)s AND s.expires_at IS NULL
RETURNING s.key_id

-- name: cap_old_keys :many
-- At most %(max_old)s old keys stay valid: older ones expire now (newest grace keys are kept).
UPDATE whk.webhook_secrets s
SET expires_at = clock_timestamp()
WHERE s.id IN (
    SELECT o.id FROM whk.webhook_secrets o
    WHERE o.webhook_id = %(webhook_id)s AND o.expires_at IS NOT NULL AND o.expires_at > clock_timestamp()
    ORDER BY o.created_at DESC, o.id DESC
    OFFSET %(max_old)s
)
RETURNING s.key_id
