-- whk.archive_deliveries: move the finished deliveries (delivered, cancelled, superseded) among p_ids from
-- the live queue to the append-only history, in one statement: the row is deleted from whk.delivery_queue
-- and written once into whk.delivery_history (same id, same columns, plus finished_at), so it is in
-- exactly one of the two at every moment and whk.whk_03_entregas shows it once. The functions that finish
-- deliveries off the hot path (acks, supersede, cancellation) set the final status and call this in the
-- same transaction; whk.record_outcomes, the hot path, moves its delivered and cancelled rows itself
-- without the intermediate UPDATE. Rows of p_ids that are not finished are left alone. Returns how many
-- moved.
CREATE OR REPLACE FUNCTION whk.archive_deliveries(p_ids bigint[], p_now timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_n integer;
BEGIN
    WITH gone AS (
        DELETE FROM whk.delivery_queue d
         WHERE d.id = ANY (p_ids) AND d.status IN ('delivered', 'cancelled', 'superseded')
        RETURNING d.*
    )
    INSERT INTO whk.delivery_history
    SELECT g.*, coalesce(p_now, clock_timestamp()) FROM gone g;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.archive_deliveries(bigint[], timestamptz) IS
    'Move the finished deliveries among p_ids from whk.delivery_queue to whk.delivery_history; returns how many.';
