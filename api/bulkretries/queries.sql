-- Bulk retries: the state changes are whk.bulk_retry_start / whk.bulk_retry_cancel (sql/functions/delivery);
-- the job worker works them through with whk.bulk_retry_step.

-- name: start :one
SELECT whk.bulk_retry_start(%(tenant)s, %(webhook_id)s, %(event_type)s, %(status)s::text[],
                            %(created_from)s, %(created_to)s, %(created_by)s)

-- name: get :one
-- An admin's retry (consumer_id NULL) is visible to admins only.
SELECT r.id, r.consumer_id, r.webhook_id, r.event_type, r.statuses AS status, r.created_from, r.created_to,
       r.total, r.done, r.requeued, r.skipped, r.state, r.error, r.created_by, r.created_at, r.updated_at,
       r.finished_at
FROM whk.bulk_retries r
WHERE r.id = %(id)s AND (%(tenant)s::bigint IS NULL OR r.consumer_id = %(tenant)s::bigint)

-- name: cancel :one
SELECT whk.bulk_retry_cancel(%(id)s)
