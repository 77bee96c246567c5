-- whk.kpi_webhook_state: the current state of each webhook (not deleted): status, breaker, how long the
-- breaker has been open, the failure streak and the age of its oldest due delivery. Each figure is one
-- index probe per webhook (the due index gives the oldest pending delivery), whatever the backlog.
CREATE OR REPLACE VIEW whk.kpi_webhook_state AS
SELECT w.id AS webhook_id, w.consumer_id, w.status,
       coalesce(r.breaker_state, 'closed') AS breaker_state,
       CASE WHEN r.breaker_state = 'open'
            THEN extract(epoch FROM clock_timestamp() - r.opened_at)::double precision END AS breaker_open_s,
       coalesce(r.consecutive_failures, 0) AS consecutive_failures,
       greatest(extract(epoch FROM clock_timestamp() - p.next_attempt_at)::double precision, 0)
           AS oldest_pending_age_s
FROM whk.whk_01_webhooks w
LEFT JOIN whk.webhook_runtime r ON r.webhook_id = w.id
LEFT JOIN LATERAL (
    SELECT d.next_attempt_at FROM whk.delivery_queue d
    WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
    ORDER BY d.next_attempt_at
    LIMIT 1
) p ON true
WHERE w.deleted_at IS NULL;
COMMENT ON VIEW whk.kpi_webhook_state IS
    'Per-webhook state: status, breaker (and seconds open), failure streak, oldest due delivery age.';
