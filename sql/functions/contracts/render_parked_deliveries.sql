-- whk.render_parked_deliveries: render again the deliveries parked because their body could not be
-- rendered for their webhook's pinned major (whk_03_entregas.render_problem), of one event type or (NULL)
-- of all. whk.register_event_transform calls it; call it yourself after fixing a transform's body with
-- CREATE OR REPLACE FUNCTION, or after re-pinning a webhook.
--
-- Each delivery rendered now, with the same rules as routing (whk.render_event, then the webhook's filter
-- on the rendered body):
-- * its webhook and consumer can receive: pending, due now (same event_id, so the same webhook-id);
-- * its webhook or consumer is disabled: stays parked as any delivery of a disabled webhook, now released
--   by whk.resume_webhook / whk.set_consumer_status like the others;
-- * the rendered body does not match the webhook's filter: cancelled, never sent (routing would not have
--   created it), with the reason kept in render_problem.
-- One that still cannot be rendered stays parked with the new reason. Returns how many were released
-- (pending, or handed over to the webhook's own parking).
CREATE OR REPLACE FUNCTION whk.render_parked_deliveries(p_event_type text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
#variable_conflict use_column
DECLARE
    v_released  integer;
    v_cancelled bigint[];
BEGIN
    WITH parked AS (
        SELECT d.id, x.body, x.problem, w.filter, coalesce(x.body, whk.event_envelope(o)) AS sent,
               w.status = 'disabled' OR a.status = 'disabled' AS held
        FROM whk.delivery_queue d
        JOIN whk.outbox o ON o.id = d.outbox_id AND o.created_at = d.event_created_at
        JOIN whk.whk_01_webhooks w ON w.id = d.webhook_id
        JOIN whk.whk_04_assinantes a ON a.id = d.consumer_id
        CROSS JOIN LATERAL whk.render_event(whk.event_envelope(o), o.event_type, o.event_version,
                                            w.payload_version) x
        WHERE d.render_problem IS NOT NULL AND d.status = 'parked'
          AND (p_event_type IS NULL OR d.event_type = p_event_type)
          AND w.deleted_at IS NULL
        FOR UPDATE OF d
    ), verdict AS (
        SELECT p.id, p.body, p.problem, p.held,
               p.problem IS NULL
               AND (p.filter IS NULL OR coalesce(p.sent @@ p.filter, false)) AS wanted
        FROM parked p
    ), changed AS (
        UPDATE whk.delivery_queue d
        SET payload = v.body,
            render_problem = CASE WHEN v.problem IS NOT NULL THEN v.problem
                                  WHEN NOT v.wanted THEN 'rendered, it does not match the webhook''s filter: not sent'
                             END,
            status = CASE WHEN v.problem IS NOT NULL OR (v.wanted AND v.held) THEN 'parked'
                          WHEN v.wanted THEN 'pending'
                          ELSE 'cancelled' END,
            next_attempt_at = clock_timestamp(), schedule_offset = d.attempts, updated_at = clock_timestamp()
        FROM verdict v
        WHERE d.id = v.id
        RETURNING d.id, d.status, d.render_problem
    )
    SELECT count(*) FILTER (WHERE c.render_problem IS NULL), array_agg(c.id) FILTER (WHERE c.status = 'cancelled')
      INTO v_released, v_cancelled FROM changed c;
    -- Cancelled (filtered out) is final: those rows move to the history.
    IF v_cancelled IS NOT NULL THEN
        PERFORM whk.archive_deliveries(v_cancelled);
    END IF;
    RETURN v_released;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.render_parked_deliveries(text) FROM PUBLIC;
COMMENT ON FUNCTION whk.render_parked_deliveries(text) IS
    'Render again deliveries parked for their pinned major (after a transform is registered or fixed); returns how many left.';
