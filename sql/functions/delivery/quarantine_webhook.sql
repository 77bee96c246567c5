-- Quarantine a webhook: the dispatcher stops claiming for it (and, at stage 'route', stops routing to it)
-- because its data made a shared delivery statement fail, or the SSRF guard refused its endpoint. Without
-- this, one bad row fails the set-based statements of every dispatcher round for every webhook.
--
-- p_stage: 'route' (routing its events failed), 'claim' (claiming its deliveries failed), 'record' (writing
-- its outcomes failed), 'ssrf' (the SSRF guard refused its endpoint). p_sqlstate: the error's SQLSTATE
-- (NULL for 'ssrf'). The state is orthogonal to status (active/paused/disabled) and to the breaker; nothing
-- else changes, so clearing it (whk.clear_webhook_quarantine) puts the webhook back where it was. Its
-- deliveries wait as they are: pending ones stay pending, in-flight ones come back by lease expiry.
--
-- Emits `whk.webhook.quarantined` into the outbox (a durable record, deliverable to webhooks that subscribe
-- to it) and, with p_actor, an audit row (whk.audit_log, looked up at run time like whk.disable_webhook).
-- Returns false when the webhook was already quarantined (the first error is kept) or does not exist.
CREATE OR REPLACE FUNCTION whk.quarantine_webhook(p_webhook_id bigint, p_stage text, p_reason text,
                                                  p_sqlstate text DEFAULT NULL, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_reason text := left(coalesce(p_reason, 'unknown error'), 2000);
BEGIN
    IF p_stage IS NULL OR p_stage NOT IN ('route', 'claim', 'record', 'ssrf') THEN
        RAISE EXCEPTION 'unknown quarantine stage %', coalesce(p_stage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use route, claim, record or ssrf';
    END IF;
    UPDATE whk.whk_01_webhooks w
    SET quarantined_at = clock_timestamp(), quarantine_stage = p_stage, quarantine_reason = v_reason,
        quarantine_sqlstate = p_sqlstate, updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.quarantined_at IS NULL
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.quarantined', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id, 'name', v_hook.name,
                               'url', v_hook.url, 'stage', p_stage, 'sqlstate', p_sqlstate, 'reason', v_reason,
                               'actor', coalesce(p_actor, current_user)),
            'EMIT');

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.quarantined'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('quarantined', false),
              jsonb_build_object('quarantined', true, 'stage', p_stage, 'sqlstate', p_sqlstate,
                                 'reason', v_reason);
    END IF;
    RETURN true;
END;
$$;
