-- Every webhook gets its runtime row (breaker, token bucket) before the claim needs to lock it. The
-- router creates rows for webhooks it fans out to; this catches deliveries created any other way.
CREATE OR REPLACE FUNCTION whk.ensure_webhook_runtime()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO whk.webhook_runtime (webhook_id)
    SELECT w.id FROM whk.whk_01_webhooks w
    WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime r WHERE r.webhook_id = w.id)
    ON CONFLICT (webhook_id) DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
