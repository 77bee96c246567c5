-- whk.replay_cancel: stop a queued or running replay. Waits for a batch in progress (it holds the row), so
-- once this returns no further delivery is created or re-queued by it; what earlier batches queued is
-- delivered as usual (cancel those deliveries separately if needed). Returns false when the replay had
-- already finished (done, cancelled or failed).
CREATE OR REPLACE FUNCTION whk.replay_cancel(p_replay_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH c AS (
        UPDATE whk.replays
           SET state = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE id = p_replay_id AND state IN ('queued', 'running')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM c);
$$;
COMMENT ON FUNCTION whk.replay_cancel(bigint) IS 'Cancel a queued or running replay (false if already finished).';
