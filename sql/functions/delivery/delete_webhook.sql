-- Delete a webhook. A soft delete: the row stays, so its deliveries and attempt log keep their webhook for
-- history, but it is marked deleted (and disabled, reason 'deleted'), so routing and the claim ignore it
-- from now on. Its unfinished deliveries (pending, parked, awaiting_ack) are cancelled: nothing more is
-- sent to an endpoint its owner removed. Deliveries in flight finish their attempt and then end cancelled
-- unless it delivered them (whk.record_outcomes, whk.release_deliveries, whk.reclaim_expired_leases), and
-- whk.retry_deliveries never re-queues a deleted webhook's deliveries. Its signing secrets
-- are dropped at once (no grace period after a delete).
-- Returns deleted = false when it was deleted already (nothing changed), and how many deliveries were
-- cancelled.
CREATE OR REPLACE FUNCTION whk.delete_webhook(p_webhook_id bigint, OUT deleted boolean, OUT cancelled integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_deleted_at timestamptz;
    v_ids        bigint[];
BEGIN
    SELECT w.deleted_at INTO v_deleted_at
    FROM whk.whk_01_webhooks w
    WHERE w.id = p_webhook_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook %', coalesce(p_webhook_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'pass the id of an existing webhook: SELECT id, name, status FROM whk.whk_01_webhooks';
    END IF;
    deleted := v_deleted_at IS NULL;
    cancelled := 0;
    IF NOT deleted THEN
        RETURN;
    END IF;

    UPDATE whk.whk_01_webhooks w
    SET deleted_at = clock_timestamp(), status = 'disabled', disabled_reason = 'deleted',
        disabled_at = clock_timestamp(), updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id;

    -- Cancelled is final: the rows move to the history.
    WITH c AS (
        UPDATE whk.delivery_queue d
        SET status = 'cancelled', updated_at = clock_timestamp()
        WHERE d.webhook_id = p_webhook_id AND d.status IN ('pending', 'parked', 'awaiting_ack')
        RETURNING d.id
    )
    SELECT count(*)::integer, array_agg(c.id) INTO cancelled, v_ids FROM c;
    IF cancelled > 0 THEN
        PERFORM whk.archive_deliveries(v_ids);
    END IF;

    DELETE FROM whk.webhook_secrets s WHERE s.webhook_id = p_webhook_id;
END;
$$;
COMMENT ON FUNCTION whk.delete_webhook(bigint) IS
    'Soft-delete a webhook: unfinished deliveries cancelled, signing secrets dropped. Returns (deleted, cancelled).';
