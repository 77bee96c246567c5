-- whk.bulk_retry_cancel: stop a queued or running bulk retry. Waits for a batch in progress (it holds the
-- row), so once this returns no further delivery is re-queued by it; what earlier batches re-queued is
-- delivered as usual. Returns false when it had already finished (done, cancelled or failed).
CREATE OR REPLACE FUNCTION whk.bulk_retry_cancel(p_bulk_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH c AS (
        UPDATE whk.bulk_retries
           SET state = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE id = p_bulk_id AND state IN ('queued', 'running')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM c);
$$;
COMMENT ON FUNCTION whk.bulk_retry_cancel(bigint) IS
    'Cancel a queued or running bulk retry (false if already finished).';
