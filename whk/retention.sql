-- Retention (whk.retention): the plan, and one step of each kind. Every step is its own statement and, on
-- an autocommit connection, its own transaction: a batch's row locks last one batch.

-- name: plan :many
SELECT kind, item, horizon, action, est_rows, bytes FROM whk.retention_plan()

-- name: drop_outbox :many
-- At most one partition dropped per call (its locks end with the call's transaction): repeat while one is.
SELECT partition_name, dropped, reason, bytes
FROM whk.outbox_drop_partitions(now() - whk.retention_horizon('outbox'), max_drops => 1)

-- name: create_outbox :many
SELECT whk.outbox_create_partitions()

-- name: delete_deliveries :one
SELECT whk.retention_delete_deliveries(%(batch)s)

-- name: delete_attempts :one
SELECT whk.retention_delete_attempts(%(batch)s)

-- name: delete_audit :one
SELECT whk.retention_delete_audit(%(batch)s)
