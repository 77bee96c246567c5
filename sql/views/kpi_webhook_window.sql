-- whk.kpi_webhook_window: attempt KPIs per webhook over the standard windows (5 minutes, 1 hour, 1 day):
-- attempts, failures (retry/throttle/blocked outcomes), failure_rate, retries, retry_rate, dead letters,
-- p95 latency (histogram bound). A supported interface (docs/operations.md): the dashboard, Prometheus and
-- the alerts read these numbers. Other windows: whk.kpi_webhook_window_at(seconds).
CREATE OR REPLACE VIEW whk.kpi_webhook_window AS
SELECT k.webhook_id, k.consumer_id, k.window_s, k.attempts, k.failures, k.failure_rate, k.retries,
       k.retry_rate, k.dead_letters, k.latency_p95_ms
FROM unnest(ARRAY[300, 3600, 86400]) AS s(window_s)
CROSS JOIN LATERAL whk.kpi_webhook_window_at(s.window_s) AS k;
COMMENT ON VIEW whk.kpi_webhook_window IS
    'Attempt KPIs per webhook over 5 min, 1 h and 1 day (from whk.kpi_webhook_minute).';
