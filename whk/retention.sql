-- Retention (whk.retention): the plan, and one step of each kind. Every step is its own statement and, on
-- an autocommit connection, its own transaction: a batch's row locks last one batch.

-- name: plan :many
SELECT kind, item, horizon, action, est_rows, bytes FROM whk.retention_plan()

-- name: drop_outbox :many
-- At most one partition dropped per call (its locks end with the call's transaction): repeat while one is.
SELECT partition_name, dropped, reason, bytes
FROM whk.drop_partitions('whk.outbox', now() - whk.retention_horizon('outbox'), max_drops => 1)

-- name: drop_attempts :many
-- The attempt log, the same way: whole expired days, one per call.
SELECT partition_name, dropped, reason, bytes
FROM whk.drop_partitions('whk.whk_03_entregas_tentativas', now() - whk.retention_horizon('attempts'),
                         max_drops => 1)

-- name: drop_history :many
-- Finished deliveries, the same way: whole expired days, one per call (dead letters are live rows, never here).
SELECT partition_name, dropped, reason, bytes
FROM whk.drop_partitions('whk.delivery_history', now() - whk.retention_horizon('delivered'), max_drops => 1)

-- name: create_partitions :many
-- The coming days of every time-partitioned table (the housekeeping schedule runs the same call).
SELECT whk.create_partitions(t.parent) FROM (SELECT DISTINCT p.parent FROM whk.partitions p) t

-- name: delete_audit :one
SELECT whk.retention_delete_audit(%(batch)s)
