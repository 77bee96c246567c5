-- The partitions of WHK's time-partitioned tables (whk.outbox by created_at, the attempt log
-- whk.whk_03_entregas_tentativas by started_at, the delivery history whk.delivery_history by finished_at) with their time ranges (NULL bounds for the default
-- partition): what whk.create_partitions and whk.drop_partitions work from, and what a DBA looks at.
CREATE VIEW whk.partitions AS
SELECT i.inhparent::regclass                                                    AS parent,
       p.oid::regclass                                                          AS partition,
       n.nspname || '.' || p.relname                                            AS partition_name,
       (substring(b.bound FROM 'FROM \(''([^'']+)''\)'))::timestamptz          AS range_from,
       (substring(b.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz            AS range_to,
       b.bound = 'DEFAULT'                                                      AS is_default
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS bound) AS b
WHERE i.inhparent IN ('whk.outbox'::regclass, 'whk.whk_03_entregas_tentativas'::regclass,
                      'whk.delivery_history'::regclass);
COMMENT ON VIEW whk.partitions IS
    'Partitions of whk.outbox, whk.whk_03_entregas_tentativas and whk.delivery_history and their time ranges (see docs/delivery.md).';

CREATE VIEW whk.outbox_partitions AS
SELECT p.partition, p.partition_name, p.range_from, p.range_to, p.is_default
FROM whk.partitions p
WHERE p.parent = 'whk.outbox'::regclass;
COMMENT ON VIEW whk.outbox_partitions IS 'Partitions of whk.outbox and their created_at ranges (see docs/capture.md).';
