-- whk.outbox_create_partitions: whk.create_partitions for whk.outbox (outbox_pYYYYMMDD), the name DBAs'
-- scripts and docs/capture.md use. period NULL: the outbox's own (whk.partition_period, from its retention).
CREATE OR REPLACE FUNCTION whk.outbox_create_partitions(ahead interval DEFAULT '7 days', period text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT whk.create_partitions('whk.outbox'::regclass, ahead, period);
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_create_partitions(interval, text) IS
    'Create outbox partitions (day/week/month; by default the size its retention calls for) up to now() + ahead; moves stray rows out of outbox_default.';
