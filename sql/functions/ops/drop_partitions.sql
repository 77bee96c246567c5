-- whk.drop_partitions: retention of a time-partitioned table (whk.partitions). Drops the partitions whose
-- whole period ended more than older_than ago, but only those that hold no work (whk.partition_work): an
-- outbox partition while any of its events is pending or invalid (keep_invalid) or has an unfinished
-- delivery; an attempt-log partition while it holds an attempt of an unfinished or dead-lettered delivery;
-- a delivery-history partition always goes (it only holds finished deliveries). Dead letters keep what
-- they need until they are retried or purged: their own copy of the body, and their attempts. One row per
-- old partition says what happened. The default partition is never dropped. The cost is flat: no row is
-- read or deleted one by one, whatever the partition holds.
--
-- Locks: a partition is first checked without a lock; only one that looks droppable is then locked
-- (ACCESS EXCLUSIVE on it; for the outbox also SHARE on whk.delivery_queue, so no delivery of its events
-- appears meanwhile), checked again and dropped (ACCESS EXCLUSIVE on the parent table and its default
-- partition: inserts wait for that moment). Those locks last until the caller's transaction ends, so max_drops bounds the partitions
-- dropped per call: the job worker calls it with max_drops => 1, one short transaction per partition,
-- until nothing more goes. lock_timeout (1 s) bounds how long a waiting lock holds others up behind it; a
-- busy partition is simply kept this time. A transaction reading the partition finishes first.
-- dry_run = true takes no lock and drops nothing: `dropped` then says what a real run would do. `bytes` is
-- the partition's size on disk with its indexes (pg_total_relation_size), what dropping it frees.
CREATE OR REPLACE FUNCTION whk.drop_partitions(p_table regclass,
                                               older_than interval DEFAULT '30 days',
                                               keep_invalid boolean DEFAULT true,
                                               dry_run boolean DEFAULT false,
                                               max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
DECLARE
    v_part    regclass;
    v_from    timestamptz;
    v_to      timestamptz;
    v_why     text;
    v_dropped integer := 0;
    v_what    text := CASE p_table WHEN 'whk.outbox'::regclass THEN 'events'
                                   WHEN 'whk.delivery_history'::regclass THEN 'finished deliveries'
                                   ELSE 'attempts' END;
BEGIN
    IF max_drops IS NOT NULL AND max_drops < 1 THEN
        RAISE EXCEPTION 'max_drops must be at least 1, got %', max_drops
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL drops every droppable partition';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM whk.partitions p WHERE p.parent = p_table) THEN
        RAISE EXCEPTION '% is not a time-partitioned WHK table', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use whk.outbox, whk.whk_03_entregas_tentativas or whk.delivery_history (see the view whk.partitions)';
    END IF;
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.partitions p
         WHERE p.parent = p_table AND NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        EXIT WHEN v_dropped >= max_drops;
        bytes := pg_total_relation_size(v_part);
        v_why := whk.partition_work(p_table, v_part, v_from, v_to, keep_invalid);
        IF v_why IS NULL AND NOT dry_run THEN
            BEGIN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
                IF p_table = 'whk.outbox'::regclass THEN
                    LOCK TABLE whk.delivery_queue IN SHARE MODE;
                END IF;
                v_why := whk.partition_work(p_table, v_part, v_from, v_to, keep_invalid);
                IF v_why IS NULL THEN
                    EXECUTE format('DROP TABLE %s', v_part);
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                v_why := 'busy (lock timeout), try again later';
            END;
        END IF;
        IF v_why IS NULL THEN
            dropped := true;
            reason := format(CASE WHEN dry_run THEN 'would remove %s from %s to %s'
                                  ELSE '%s from %s to %s removed' END, v_what, v_from, v_to);
            v_dropped := v_dropped + 1;
        ELSE
            dropped := false;
            reason := 'kept: ' || v_why;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it.
GRANT EXECUTE ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) IS
    'Drop old partitions of the outbox, attempt log or delivery history that hold no pending/invalid events and nothing an unfinished or dead-lettered delivery needs.';
