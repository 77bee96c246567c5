-- whk.outbox_drop_partitions: retention. Drops outbox partitions whose whole period ended more than
-- older_than ago, but only those that hold no work: a partition is kept while any of its events is still
-- pending (not routed yet), failed the router's schema validation (valid = false: kept for an operator's
-- look unless keep_invalid is false; the router delivers such events anyway and marks them, it never gives
-- them a status of their own), or has a delivery that is not finished (pending, in_flight, awaiting_ack, parked) or was dead-lettered
-- (dead letters keep their event for inspection and replay; cancel or purge them to release it).
-- One row per old partition says what happened. The partition is locked before it is checked, so a
-- transaction reading its events (a replay) finishes first, and deliveries are locked against changes
-- for the moment of the check. lock_timeout bounds the wait; a busy partition is simply kept this time.
-- The default partition is never dropped. Deliveries have no copy of their payload (the claim rebuilds the
-- body from the outbox row with whk.event_envelope), hence the check. dry_run = true takes no lock and drops
-- nothing: `dropped` then says what a real run would do. `bytes` is the partition's size on disk with its
-- indexes (pg_total_relation_size), what dropping it frees.
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
                                                      keep_invalid boolean DEFAULT true,
                                                      dry_run boolean DEFAULT false)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
SET lock_timeout = '5s'
AS $$
#variable_conflict use_column
DECLARE
    v_part  regclass;
    v_from  timestamptz;
    v_to    timestamptz;
    v_why   text;
BEGIN
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.outbox_partitions p
         WHERE NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        bytes := pg_total_relation_size(v_part);
        BEGIN
            IF NOT dry_run THEN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
                LOCK TABLE whk.whk_03_entregas IN SHARE MODE;
            END IF;
            EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %1$s WHERE status = ''pending'') THEN ''pending events'''
                           '            WHEN $1 AND EXISTS (SELECT 1 FROM %1$s WHERE valid IS FALSE) THEN ''invalid events'' END',
                           v_part)
               INTO v_why USING keep_invalid;
            IF v_why IS NULL THEN
                SELECT CASE WHEN d.status = 'dead' THEN 'dead-lettered deliveries' ELSE 'unfinished deliveries' END
                  INTO v_why
                  FROM whk.whk_03_entregas d
                 WHERE d.status IN ('pending', 'in_flight', 'awaiting_ack', 'parked', 'dead')
                   AND d.event_created_at >= v_from AND d.event_created_at < v_to
                 ORDER BY d.status = 'dead'
                 LIMIT 1;
            END IF;
            IF v_why IS NULL AND dry_run THEN
                dropped := true;
                reason := format('would remove events from %s to %s', v_from, v_to);
            ELSIF v_why IS NULL THEN
                EXECUTE format('ALTER TABLE whk.outbox DETACH PARTITION %s', v_part);
                EXECUTE format('DROP TABLE %s', v_part);
                dropped := true;
                reason := format('events from %s to %s removed', v_from, v_to);
            ELSE
                dropped := false;
                reason := 'kept: ' || v_why;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            dropped := false;
            reason := 'kept: busy (lock timeout), try again later';
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean) FROM PUBLIC;
-- The job worker's `retention` schedule runs it.
GRANT EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished or dead-lettered deliveries.';
