-- Pause a webhook. The claim serves active webhooks only, so its pending deliveries stay pending (due,
-- not parked) and go out as soon as whk.resume_webhook makes it active again; deliveries in flight finish
-- their attempt. Routing still fans out to a paused webhook: events committed while it is paused get their
-- deliveries, pending, and go out in order after the resume (an operator pausing for a receiver's
-- maintenance window gets every event afterwards). A disabled webhook may be paused as well: its parked
-- deliveries stay parked and its disabled_reason is kept until it is resumed; from then on it is routed to
-- like any paused webhook.
-- Returns false when the webhook was already paused (nothing changed).
CREATE OR REPLACE FUNCTION whk.pause_webhook(p_webhook_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_status text;
BEGIN
    SELECT w.status INTO v_status
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id AND w.deleted_at IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of a webhook that is not deleted: SELECT id, name, status FROM whk.whk_01_webhooks WHERE deleted_at IS NULL';
    END IF;
    IF v_status = 'paused' THEN
        RETURN false;
    END IF;
    UPDATE whk.whk_01_webhooks w
    SET status = 'paused', updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION whk.pause_webhook(bigint) IS
    'Pause a webhook: nothing is claimed for it (pending deliveries wait) until whk.resume_webhook. False when already paused.';
