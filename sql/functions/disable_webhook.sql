-- Disable a webhook (410 Gone, auto-disable after an unbroken failure window, or an operator) and park its
-- unfinished deliveries: parked rows are kept, not lost, and come back with whk.resume_webhook.
-- Emits a `whk.webhook.disabled` event through the outbox (it is delivered like any other event and is
-- the durable record of who/why/when), and records the reason on the webhook row.
-- Returns false when the webhook was not active (nothing changed, no duplicate event).
CREATE OR REPLACE FUNCTION whk.disable_webhook(p_webhook_id bigint, p_reason text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook record;
    v_parked integer;
BEGIN
    UPDATE whk.whk_01_webhooks w
    SET status = 'disabled', disabled_reason = p_reason, disabled_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.status <> 'disabled'
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- In-flight rows finish their attempt; whk.record_outcomes parks them if it fails (status pending
    -- rows of a disabled webhook are never claimed, see whk.claim_deliveries).
    UPDATE whk.whk_03_entregas d
    SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    INSERT INTO whk.outbox (event_type, event_key, payload, operation)
    VALUES ('whk.webhook.disabled', p_webhook_id::text,
            jsonb_build_object(
                'type', 'whk.webhook.disabled',
                'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id,
                                           'name', v_hook.name, 'url', v_hook.url, 'reason', p_reason,
                                           'parked_deliveries', v_parked, 'actor', current_user)),
            'EMIT');
    RETURN true;
END;
$$;
