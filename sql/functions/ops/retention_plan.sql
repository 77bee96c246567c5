-- whk.retention_plan: what a retention run would remove now, without removing anything (`whk db retention
-- --dry-run`). One row per old partition of the outbox, the attempt log and the delivery history (from
-- whk.drop_partitions in dry-run mode: its exact size on disk, and whether it would be dropped or why it
-- is kept) and one row for the table retained by batched deletes (audit_log) with the planner's estimate
-- of the rows and the bytes they take (the table's size with indexes per live row): counting exactly
-- would read the very rows retention exists to avoid reading. SECURITY DEFINER so the worker's and the
-- read-only role may see the audit trail's numbers without reading the audit trail.
CREATE OR REPLACE FUNCTION whk.retention_plan()
RETURNS TABLE (kind text, item text, horizon timestamptz, action text, est_rows bigint, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_keep_invalid constant boolean := true;
    r record;
    v_q text;
    v_plan json;
    v_per_row double precision;
BEGIN
    FOR r IN SELECT k.kind, whk.retention_horizon(k.kind) AS horizon, d.*
               FROM (VALUES ('outbox', 'whk.outbox'::regclass),
                            ('attempts', 'whk.whk_03_entregas_tentativas'::regclass),
                            ('delivered', 'whk.delivery_history'::regclass)) AS k(kind, tbl)
               CROSS JOIN LATERAL whk.drop_partitions(k.tbl, now() - whk.retention_horizon(k.kind),
                                                      v_keep_invalid, dry_run => true) AS d
    LOOP
        kind := r.kind;
        horizon := r.horizon;
        item := r.partition_name;
        action := CASE WHEN r.dropped THEN 'drop partition' ELSE r.reason END;
        est_rows := NULL;
        bytes := r.bytes;
        RETURN NEXT;
    END LOOP;
    FOR kind, item, horizon, v_q IN
        SELECT k, t, whk.retention_horizon(k),
               format(q, whk.retention_horizon(k)) AS q
          FROM (VALUES
                ('audit', 'whk.audit_log',
                 'SELECT 1 FROM whk.audit_log WHERE occurred_at < %L')) AS v(k, t, q)
    LOOP
        EXECUTE 'EXPLAIN (FORMAT JSON) ' || v_q INTO v_plan;
        est_rows := ceil((v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision);
        -- A table never analysed has reltuples -1: count it (only small, fresh tables are never analysed).
        SELECT CASE WHEN c.reltuples > 0 THEN pg_total_relation_size(c.oid) / c.reltuples::double precision END
          INTO v_per_row
          FROM pg_catalog.pg_class c WHERE c.oid = item::regclass;
        IF v_per_row IS NULL THEN
            EXECUTE format('SELECT pg_total_relation_size(%L::regclass)::double precision / greatest(count(*), 1)'
                           ' FROM %s', item, item) INTO v_per_row;
        END IF;
        action := 'batched delete';
        bytes := round(est_rows * coalesce(v_per_row, 0));
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.retention_plan() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.retention_plan() TO whk_dispatcher, whk_readonly;
COMMENT ON FUNCTION whk.retention_plan() IS
    'Dry run of retention: old outbox, attempt-log and delivery-history partitions with their sizes, estimated rows/bytes of the audit deletes.';
