-- Runtime queries of the dispatcher (loaded once by dispatcher/repository.py).

-- name: dispatch_round :many
SELECT routed, more_due, delivery_id, webhook_id, event_id, event_type, attempts, schedule_offset, batch_id, commit_seq,
       ordering_key, payload
FROM whk.dispatch_round(%(dispatcher)s, %(route_limit)s, %(claim_limit)s, %(lease_s)s, %(finished)s::bigint[]);

-- name: record_outcomes :one
-- The arrays are bound in binary format: dumped as text, their hundreds of elements cost the dispatcher ~3x
-- the CPU.
SELECT r.applied, r.breaker_transitions
FROM whk.record_outcomes(%(dispatcher)s, %(attempts)s::jsonb, %(ids)b::bigint[], %(attempt_ix)b::integer[],
                         %(attempt_no)b::integer[], %(state)b::text[], %(next_at)b::timestamptz[],
                         %(ack_deadline)b::timestamptz[], %(dead_reason)b::text[]) AS r;

-- name: release_deliveries :one
SELECT whk.release_deliveries(%(dispatcher)s);

-- name: next_wakeup :one
SELECT extract(epoch FROM whk.next_wakeup() - clock_timestamp())::double precision;

-- name: heartbeat :one
SELECT whk.dispatcher_heartbeat(%(id)s, %(hostname)s, %(pid)s, %(version)s, %(stopping)s, %(forget_after_s)s,
                                %(ssrf_policy)s, %(ssrf_exempt)s::text[], %(last_error)s);

-- name: isolate_round_faults :many
-- Only after a failed round: find and quarantine the webhooks that make it fail (bisection, rolled back).
SELECT webhook_id, stage, sqlstate, message
FROM whk.isolate_round_faults(%(dispatcher)s, %(route_limit)s, %(lease_s)s);

-- name: quarantine_webhook :one
SELECT whk.quarantine_webhook(%(id)s, %(stage)s, %(reason)s, %(sqlstate)s, %(actor)s);

-- name: set_idle :one
SELECT whk.dispatcher_set_idle(%(id)s, %(idle)s);

-- name: system_event :one
SELECT whk.emit_system(%(kind)s, 'dispatcher', %(details)s::jsonb);

-- name: forget_dispatcher :one
DELETE FROM whk.dispatchers WHERE id = %(id)s;

-- name: sweep :one
-- One maintenance pass; the advisory try-lock lets exactly one dispatcher do it at a time.
SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('whk.delivery_sweep'))
            THEN jsonb_build_object(
                     'runtime', whk.ensure_webhook_runtime(),
                     'reclaimed', whk.reclaim_expired_leases(),
                     'ack_expired', whk.expire_acks(),
                     'disabled', whk.auto_disable_webhooks())
       END;

-- name: webhooks :many
-- Delivery settings of the webhooks we just claimed for (cached briefly by the engine).
SELECT w.id, w.consumer_id, w.url, w.http_method, w.headers, w.auth_type, w.auth_header_name,
       w.auth_credential_enc, w.require_ack, w.ack_timeout_seconds,
       whk.effective_retry_policy(w.retry_policy) AS retry_policy, w.timeout_ms,
       w.delivery_mode, w.status,
       coalesce((SELECT array_agg(s.id ORDER BY s.created_at DESC) FROM whk.webhook_secrets s
                 WHERE s.webhook_id = w.id AND (s.expires_at IS NULL OR s.expires_at > now())), '{}') AS secret_ids,
       coalesce((SELECT array_agg(s.secret_enc ORDER BY s.created_at DESC) FROM whk.webhook_secrets s
                 WHERE s.webhook_id = w.id AND (s.expires_at IS NULL OR s.expires_at > now())), '{}') AS secrets_enc,
       (SELECT r.trace_until FROM whk.webhook_runtime r
        WHERE r.webhook_id = w.id AND r.trace_until > now()) AS trace_until
FROM whk.whk_01_webhooks w
WHERE w.id = ANY(%(ids)s);

-- name: response_body_max_bytes :one
-- Response bytes kept per attempt (global setting; bounds: whk.config_value_problem).
SELECT whk.delivery_config('delivery.response_body_max_bytes');

-- name: schema_version :one
SELECT coalesce(max(version), 0) FROM whk.schema_migrations;
