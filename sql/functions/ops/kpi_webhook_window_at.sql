-- Attempt KPIs of each webhook over the last p_window_s seconds, from the minute roll-up
-- (whk.kpi_webhook_minute): the window starts at the minute that contains now() - p_window_s.
-- Plain LANGUAGE sql without SET so PostgreSQL inlines it: a caller's WHERE webhook_id = ... reaches the
-- roll-up's primary key, and the window's start, from statement_timestamp() (stable, unlike
-- clock_timestamp()), is the second column's bound: one webhook's window is read, not its 31 days.
-- Alert evaluation calls it with each rule's window; whk.kpi_webhook_window is it at the standard windows.
CREATE OR REPLACE FUNCTION whk.kpi_webhook_window_at(p_window_s integer)
RETURNS TABLE (webhook_id bigint, consumer_id bigint, window_s integer, attempts bigint, failures bigint,
               retries bigint, dead_letters bigint, failure_rate double precision, retry_rate double precision,
               latency_p95_ms double precision, timed bigint, lat_le bigint[], lat_max_ms double precision)
LANGUAGE sql
STABLE
AS $$
    SELECT m.webhook_id, min(m.consumer_id), p_window_s, sum(m.attempts)::bigint, sum(m.failures)::bigint,
           sum(m.retries)::bigint, sum(m.dead)::bigint,
           sum(m.failures)::double precision / nullif(sum(m.attempts), 0),
           sum(m.retries)::double precision / nullif(sum(m.attempts), 0),
           whk.kpi_latency_bound(0.95,
               ARRAY[sum(m.lat_le_25), sum(m.lat_le_100), sum(m.lat_le_250), sum(m.lat_le_500),
                     sum(m.lat_le_1000), sum(m.lat_le_2500), sum(m.lat_le_5000), sum(m.lat_le_10000)]::bigint[],
               sum(m.timed)::bigint, max(m.lat_max_ms)),
           sum(m.timed)::bigint,
           ARRAY[sum(m.lat_le_25), sum(m.lat_le_100), sum(m.lat_le_250), sum(m.lat_le_500),
                 sum(m.lat_le_1000), sum(m.lat_le_2500), sum(m.lat_le_5000), sum(m.lat_le_10000)]::bigint[],
           max(m.lat_max_ms)
    FROM whk.kpi_webhook_minute m
    WHERE m.minute >= date_trunc('minute', statement_timestamp() - make_interval(secs => p_window_s))
    GROUP BY m.webhook_id
$$;
