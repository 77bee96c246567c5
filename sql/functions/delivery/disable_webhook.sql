-- Disable a webhook (410 Gone, auto-disable after an unbroken failure window, or an operator) and park its
-- unfinished deliveries: parked rows are kept, not lost, and come back with whk.resume_webhook.
-- Emits a `whk.webhook.disabled` event into the outbox (delivered like any other event to webhooks that
-- subscribe to it, and a durable record of who/why/when) and records the reason on the webhook row.
-- p_actor set (the dispatcher: 410, auto-disable) also writes the audit trail (whk.audit_log, created by
-- the API migration; looked up at run time so this function does not depend on it). The API passes no
-- actor: it audits the operator's request itself, in the same transaction.
-- Returns false when the webhook was already disabled (nothing changed, no duplicate event).
CREATE OR REPLACE FUNCTION whk.disable_webhook(p_webhook_id bigint, p_reason text, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_before text;
    v_parked integer;
BEGIN
    SELECT w.status INTO v_before FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id FOR UPDATE;
    UPDATE whk.whk_01_webhooks w
    SET status = 'disabled', disabled_reason = p_reason, disabled_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.status <> 'disabled'
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- In-flight rows finish their attempt; if it fails they return to pending, which a disabled webhook
    -- never claims (whk.claim_deliveries) until whk.resume_webhook.
    UPDATE whk.delivery_queue d
    SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    -- Only the data is stored; whk.event_envelope builds the delivered body (timestamp = transaction time).
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.disabled', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id,
                               'name', v_hook.name, 'url', v_hook.url, 'reason', p_reason,
                               'parked_deliveries', v_parked,
                               'actor', coalesce(p_actor, current_user)),
            'EMIT');
    PERFORM whk.wake_dispatchers();

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.disabled'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('status', v_before),
              jsonb_build_object('status', 'disabled', 'disabled_reason', p_reason, 'parked_deliveries', v_parked);
    END IF;
    RETURN true;
END;
$$;
