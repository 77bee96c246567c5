-- Disable webhooks that have failed without a single success for the configured window
-- ('delivery.auto_disable_after_s', default 5 days), through whk.disable_webhook (parks their deliveries
-- and emits whk.webhook.disabled). Returns how many were disabled.
CREATE OR REPLACE FUNCTION whk.auto_disable_webhooks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_window double precision := coalesce((whk.delivery_config('delivery.auto_disable_after_s') #>> '{}')::double precision,
                                          432000);
    v_id     bigint;
    v_count  integer := 0;
BEGIN
    FOR v_id IN
        SELECT r.webhook_id FROM whk.webhook_runtime r
        JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
        WHERE w.status = 'active' AND r.failing_since < clock_timestamp() - make_interval(secs => v_window)
          -- A quarantined webhook, or one waiting for its signing secret, makes no attempts: its streak
          -- does not age.
          AND w.quarantined_at IS NULL AND w.needs_secret_since IS NULL
    LOOP
        IF whk.disable_webhook(v_id, format('failing without a success for %s seconds', v_window), 'whk-dispatcher') THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;
