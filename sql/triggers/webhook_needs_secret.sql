-- Never unsigned: whk_01_webhooks.needs_secret_since is derived, never trusted from the writer. Any INSERT
-- (the API's, a DBA's in SQL) starts without a secret; an UPDATE that touches the column gets it recomputed
-- from whk.webhook_secrets (set while no current secret exists, the first time kept).
CREATE OR REPLACE FUNCTION whk.webhook_needs_secret()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM whk.webhook_secrets s
                                    WHERE s.webhook_id = NEW.id AND s.expires_at IS NULL) THEN
        NEW.needs_secret_since := NULL;
    ELSE
        NEW.needs_secret_since := coalesce(CASE WHEN TG_OP = 'UPDATE' THEN OLD.needs_secret_since END,
                                           clock_timestamp());
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.webhook_needs_secret() IS
    'Trigger: derive whk_01_webhooks.needs_secret_since (set while the webhook has no current signing secret).';

CREATE TRIGGER whk_01_webhooks_needs_secret
    BEFORE INSERT OR UPDATE OF needs_secret_since ON whk.whk_01_webhooks
    FOR EACH ROW EXECUTE FUNCTION whk.webhook_needs_secret();

-- A webhook that needs a secret at COMMIT gets the provisioning job queued (whk.enqueue_secret_provisioning).
-- Deferred, so the API's create (the webhook row, then its secret, in one transaction) queues nothing.
CREATE OR REPLACE FUNCTION whk.webhook_request_secret()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    PERFORM whk.enqueue_secret_provisioning(NEW.id);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.webhook_request_secret() IS
    'Constraint trigger: at commit, queue the provision_secret job of a webhook still without a signing secret.';

CREATE CONSTRAINT TRIGGER whk_01_webhooks_request_secret
    AFTER INSERT OR UPDATE OF needs_secret_since ON whk.whk_01_webhooks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.needs_secret_since IS NOT NULL)
    EXECUTE FUNCTION whk.webhook_request_secret();

-- A secret added, removed, expired by hand or moved: the webhook's needs_secret_since follows (the UPDATE
-- only touches the column; whk.webhook_needs_secret computes it, and only when the state changes).
CREATE OR REPLACE FUNCTION whk.webhook_secrets_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    UPDATE whk.whk_01_webhooks w SET needs_secret_since = NULL
    WHERE w.id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.webhook_id END,
                   CASE WHEN TG_OP <> 'DELETE' THEN NEW.webhook_id END)
      AND (w.needs_secret_since IS NULL) <> EXISTS (SELECT 1 FROM whk.webhook_secrets s
                                                    WHERE s.webhook_id = w.id AND s.expires_at IS NULL);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.webhook_secrets_changed() IS
    'Trigger: keep whk_01_webhooks.needs_secret_since in step with the webhook''s signing secrets.';

CREATE TRIGGER webhook_secrets_changed
    AFTER INSERT OR DELETE OR UPDATE OF webhook_id, expires_at ON whk.webhook_secrets
    FOR EACH ROW EXECUTE FUNCTION whk.webhook_secrets_changed();
