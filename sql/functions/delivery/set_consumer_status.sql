-- Set a consumer's status ('active' | 'suspended' | 'disabled') and move its deliveries to match: the
-- status gates delivery as well as API access, so a tenant switched off is switched off everywhere.
-- * suspended: a pause for every webhook of the consumer. Events are still routed to them and wait,
--   pending; the claim serves nothing of the consumer until it is active again; nothing is lost.
-- * disabled: like disabling each of its webhooks (whk.disable_webhook): its pending deliveries are parked
--   and new events are not routed to it. The webhook rows keep their own status.
-- * active (or suspended) after disabled: the deliveries parked for the consumer become pending, due now,
--   with a fresh retry schedule, as whk.resume_webhook does; those of a webhook that is disabled itself
--   stay parked for whk.resume_webhook, those of a deleted one are cancelled by whk.delete_webhook already.
-- Deliveries in flight finish their attempt; a failure returns them to pending, which the claim leaves
-- alone while the consumer is not active.
-- Returns changed = false when the consumer already had that status (nothing moved).
CREATE OR REPLACE FUNCTION whk.set_consumer_status(p_consumer_id bigint, p_status text, OUT changed boolean,
                                                   OUT parked integer, OUT released integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_before text;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('active', 'suspended', 'disabled') THEN
        RAISE EXCEPTION 'invalid consumer status %', coalesce(quote_literal(p_status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use one of active, suspended, disabled';
    END IF;
    SELECT a.status INTO v_before FROM whk.whk_04_assinantes a WHERE a.id = p_consumer_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no consumer %', coalesce(p_consumer_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of an existing consumer: SELECT id, name, status FROM whk.whk_04_assinantes';
    END IF;
    changed := v_before IS DISTINCT FROM p_status;
    parked := 0;
    released := 0;
    IF NOT changed THEN
        RETURN;
    END IF;

    UPDATE whk.whk_04_assinantes a SET status = p_status, updated_at = clock_timestamp()
    WHERE a.id = p_consumer_id;

    IF p_status = 'disabled' THEN
        UPDATE whk.delivery_queue d
        SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
        WHERE d.consumer_id = p_consumer_id AND d.status = 'pending';
        GET DIAGNOSTICS parked = ROW_COUNT;
    ELSIF v_before = 'disabled' THEN
        UPDATE whk.delivery_queue d
        SET status = 'pending', next_attempt_at = clock_timestamp(), schedule_offset = d.attempts,
            updated_at = clock_timestamp()
        FROM whk.whk_01_webhooks w
        WHERE d.consumer_id = p_consumer_id AND d.status = 'parked' AND d.render_problem IS NULL
          AND w.id = d.webhook_id AND w.status <> 'disabled' AND w.deleted_at IS NULL;
        GET DIAGNOSTICS released = ROW_COUNT;
    END IF;
END;
$$;
COMMENT ON FUNCTION whk.set_consumer_status(bigint, text) IS
    'Set a consumer''s status; disabled parks its pending deliveries, leaving disabled releases them. Returns (changed, parked, released).';
