-- whk.bulk_retry_step: one batch of a bulk retry (the job worker calls it until it returns false; a DBA
-- can too). The row is locked for the batch, so a cancel (whk.bulk_retry_cancel) waits for the running
-- batch and the next step sees it and stops. The next p_batch candidates after the keyset position go
-- through whk.retry_deliveries (same event_id, so the same webhook-id header; it skips those whose event
-- left the outbox or whose webhook was deleted meanwhile: counted as skipped). Returns true while there
-- may be more to do.
CREATE OR REPLACE FUNCTION whk.bulk_retry_step(p_bulk_id bigint, p_batch integer DEFAULT 1000)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_state    text;
    v_cursor   bigint;
    v_ids      bigint[];
    v_n        integer;
    v_requeued integer := 0;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 deliveries per step';
    END IF;
    SELECT r.state, r.cursor_id INTO v_state, v_cursor FROM whk.bulk_retries r WHERE r.id = p_bulk_id FOR UPDATE;
    IF NOT FOUND OR v_state NOT IN ('queued', 'running') THEN
        RETURN false;
    END IF;
    SELECT array_agg(c.id ORDER BY c.id) INTO v_ids
      FROM whk.bulk_retry_candidates(p_bulk_id, v_cursor, p_batch) AS c(id);
    v_n := coalesce(cardinality(v_ids), 0);
    IF v_n > 0 THEN
        v_requeued := whk.retry_deliveries(v_ids);
        IF v_requeued > 0 THEN
            PERFORM whk.wake_dispatchers();
        END IF;
    END IF;
    UPDATE whk.bulk_retries
       SET done = done + v_n, requeued = requeued + v_requeued, skipped = skipped + (v_n - v_requeued),
           total = greatest(total, done + v_n),
           cursor_id = coalesce(v_ids[v_n], cursor_id),
           state = CASE WHEN v_n < p_batch THEN 'done' ELSE 'running' END,
           finished_at = CASE WHEN v_n < p_batch THEN clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = p_bulk_id;
    RETURN v_n = p_batch;
END;
$$;
COMMENT ON FUNCTION whk.bulk_retry_step(bigint, integer) IS
    'One batch of a bulk retry: the next deliveries by id re-queued through whk.retry_deliveries.';
