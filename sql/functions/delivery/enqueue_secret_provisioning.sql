-- Queue the job that gives a webhook its signing secret (pgqueuer entrypoint 'provision_secret', payload =
-- the webhook id as text), in the caller's transaction. Secrets are encrypted with the application's key
-- (WHK_SECRET_KEYS), which the database never has, so SQL cannot make one: the job worker does, exactly as
-- the API does. SECURITY DEFINER: a trigger of any role (a DBA's INSERT, the ERP's) reaches pgqueuer's table
-- only through here. One job per webhook at a time (dedupe key, the unique index's predicate restated as
-- ON CONFLICT requires); a webhook that has a secret again, or is deleted, gets none. Returns the job id, or
-- NULL when none was queued.
CREATE OR REPLACE FUNCTION whk.enqueue_secret_provisioning(p_webhook_id bigint)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
    SELECT 10, 'provision_secret', convert_to(w.id::text, 'UTF8'), 'queued', 'provision_secret:' || w.id
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id AND w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL
    ON CONFLICT (dedupe_key) WHERE (status IN ('queued', 'picked') AND dedupe_key IS NOT NULL) DO NOTHING
    RETURNING id
$$;
COMMENT ON FUNCTION whk.enqueue_secret_provisioning(bigint) IS
    'Queue the job worker''s provision_secret job for a webhook waiting for a signing secret (once per webhook).';
REVOKE EXECUTE ON FUNCTION whk.enqueue_secret_provisioning(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.enqueue_secret_provisioning(bigint) TO whk_app, whk_dispatcher;
