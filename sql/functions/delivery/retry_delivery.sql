-- Manual retry of one delivery (see whk.retry_deliveries): true when it was re-queued.
CREATE OR REPLACE FUNCTION whk.retry_delivery(p_id bigint)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    SELECT whk.retry_deliveries(ARRAY[p_id]) = 1;
$$;
