-- The partitions of whk.outbox with their time ranges (NULL bounds for the default partition): what
-- whk.outbox_create_partitions and whk.outbox_drop_partitions work from, and what a DBA looks at.
CREATE VIEW whk.outbox_partitions AS
SELECT p.oid::regclass                                                          AS partition,
       n.nspname || '.' || p.relname                                            AS partition_name,
       (substring(b.bound FROM 'FROM \(''([^'']+)''\)'))::timestamptz          AS range_from,
       (substring(b.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz            AS range_to,
       b.bound = 'DEFAULT'                                                      AS is_default
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS bound) AS b
WHERE i.inhparent = 'whk.outbox'::regclass;
COMMENT ON VIEW whk.outbox_partitions IS 'Partitions of whk.outbox and their created_at ranges (see docs/capture.md).';
