-- whk.retention_delete_deliveries: one batch of delivery-history retention. Deletes at most p_batch
-- delivered, cancelled or superseded deliveries that finished (updated_at) before the 'delivered' horizon, lowest ids
-- first (the primary key: old rows come first, so the scan stops early), with their attempts (ON DELETE
-- CASCADE). Never a pending, in-flight, awaiting-ack, parked or dead delivery: dead letters stay until
-- they are retried or purged. Returns how many were deleted; call it again until it returns less than
-- p_batch, each call in its own transaction, so no statement holds its row locks for long.
-- whk_03_entregas is not partitioned yet, so its retention is a batched DELETE; time-partitioned history
-- (dropped like the outbox) is the planned next step.
CREATE OR REPLACE FUNCTION whk.retention_delete_deliveries(p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 rows per call';
    END IF;
    DELETE FROM whk.whk_03_entregas d
     WHERE d.id IN (SELECT x.id FROM whk.whk_03_entregas x
                     WHERE x.status IN ('delivered', 'cancelled', 'superseded')
                       AND x.updated_at < whk.retention_horizon('delivered')
                     ORDER BY x.id
                     LIMIT p_batch
                       FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.retention_delete_deliveries(integer) IS
    'Retention: delete one batch of delivered/cancelled deliveries older than retention.delivered_days.';
