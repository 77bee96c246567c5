-- whk.retention_delete_attempts: one batch of attempt-log retention. Deletes at most p_batch attempts
-- started before the 'attempts' horizon whose delivery is delivered or cancelled (or already gone), lowest
-- ids first. The attempts of a dead letter or of unfinished work stay: they are what an operator reads
-- before retrying. A delivery's attempt_ids may then name attempts that no longer exist (there is no
-- foreign key on them). Returns how many were deleted; call it until it returns less than p_batch.
CREATE OR REPLACE FUNCTION whk.retention_delete_attempts(p_batch integer DEFAULT 10000)
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
    DELETE FROM whk.whk_03_entregas_tentativas t
     WHERE t.id IN (SELECT a.id FROM whk.whk_03_entregas_tentativas a
                     WHERE a.started_at < whk.retention_horizon('attempts')
                       AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                                        WHERE d.id = a.delivery_id
                                          AND d.status NOT IN ('delivered', 'cancelled', 'superseded'))
                     ORDER BY a.id
                     LIMIT p_batch
                       FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.retention_delete_attempts(integer) IS
    'Retention: delete one batch of attempts of finished deliveries older than retention.attempts_days.';
