-- whk.outbox_drop_partitions: whk.drop_partitions for whk.outbox, the name DBAs' scripts and
-- docs/capture.md use (same arguments, same answer).
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
                                                      keep_invalid boolean DEFAULT true,
                                                      dry_run boolean DEFAULT false,
                                                      max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT * FROM whk.drop_partitions('whk.outbox'::regclass, older_than, keep_invalid, dry_run, max_drops);
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished deliveries (dead letters keep their own body).';
