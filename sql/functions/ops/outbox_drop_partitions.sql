-- whk.outbox_drop_partitions: retention. Drops outbox partitions whose whole period ended more than
-- older_than ago, but only those that hold no work (whk.outbox_partition_work): a partition is kept while
-- any of its events is still pending (not routed yet), failed the router's schema validation (valid =
-- false: kept for an operator's look unless keep_invalid is false; the router delivers such events anyway
-- and marks them, it never gives them a status of their own), or has a delivery that is not finished
-- (pending, in_flight, awaiting_ack, parked) or was dead-lettered (dead letters keep their event for
-- inspection and replay; retry or purge them to release it). One row per old partition says what
-- happened. The default partition is never dropped.
--
-- Locks: a partition is first checked without a lock; only one that looks droppable is then locked
-- (ACCESS EXCLUSIVE on it, SHARE on whk_03_entregas so no delivery of its events appears meanwhile),
-- checked again and detached (ACCESS EXCLUSIVE on whk.outbox: ERP inserts and the router wait for that
-- moment). Those locks last until the caller's transaction ends, so max_drops bounds the partitions
-- dropped per call: the job worker calls it with max_drops => 1, one short transaction per partition,
-- until nothing more goes. lock_timeout (1 s) bounds how long a waiting lock holds others up behind it;
-- a busy partition is simply kept this time. A transaction reading the partition (a replay) finishes
-- first.
-- dry_run = true takes no lock and drops nothing: `dropped` then says what a real run would do. `bytes` is
-- the partition's size on disk with its indexes (pg_total_relation_size), what dropping it frees.
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
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
BEGIN
    IF max_drops IS NOT NULL AND max_drops < 1 THEN
        RAISE EXCEPTION 'max_drops must be at least 1, got %', max_drops
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL drops every droppable partition';
    END IF;
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.outbox_partitions p
         WHERE NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        EXIT WHEN v_dropped >= max_drops;
        bytes := pg_total_relation_size(v_part);
        v_why := whk.outbox_partition_work(v_part, v_from, v_to, keep_invalid);
        IF v_why IS NULL AND NOT dry_run THEN
            BEGIN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
                LOCK TABLE whk.whk_03_entregas IN SHARE MODE;
                v_why := whk.outbox_partition_work(v_part, v_from, v_to, keep_invalid);
                IF v_why IS NULL THEN
                    EXECUTE format('ALTER TABLE whk.outbox DETACH PARTITION %s', v_part);
                    EXECUTE format('DROP TABLE %s', v_part);
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                v_why := 'busy (lock timeout), try again later';
            END;
        END IF;
        IF v_why IS NULL THEN
            dropped := true;
            reason := format(CASE WHEN dry_run THEN 'would remove events from %s to %s'
                                  ELSE 'events from %s to %s removed' END, v_from, v_to);
            v_dropped := v_dropped + 1;
        ELSE
            dropped := false;
            reason := 'kept: ' || v_why;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it.
GRANT EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished or dead-lettered deliveries.';
