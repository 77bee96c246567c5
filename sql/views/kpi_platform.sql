-- whk.kpi_platform: one row of platform-wide figures: how long the oldest unrouted outbox event has waited
-- (capture stalled: the dispatcher routes events into deliveries), webhooks disabled, breakers open,
-- webhooks waiting for a signing secret.
-- The oldest unrouted event is found through the pending index in id order (ids follow commit order
-- closely enough for an age alarm).
CREATE OR REPLACE VIEW whk.kpi_platform AS
SELECT (SELECT greatest(extract(epoch FROM clock_timestamp() - o.created_at)::double precision, 0)
        FROM whk.outbox o WHERE o.status = 'pending' ORDER BY o.id LIMIT 1) AS oldest_unrouted_age_s,
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.status = 'disabled' AND w.deleted_at IS NULL) AS webhooks_disabled,
       (SELECT count(*) FROM whk.webhook_runtime r WHERE r.breaker_state = 'open') AS breakers_open,
       -- Never unsigned: webhooks whose deliveries wait for a signing secret (the partial index).
       (SELECT count(*) FROM whk.whk_01_webhooks w
        WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL) AS webhooks_needs_secret;
COMMENT ON VIEW whk.kpi_platform IS
    'Platform-wide figures: oldest unrouted event age, disabled webhooks, open breakers, webhooks waiting for a secret.';
