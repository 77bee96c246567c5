-- The error ratio (failed attempts / attempts) of SLO p_slo_id's scope over the last p_window_s seconds,
-- from the minute roll-up; NULL when nothing was attempted. Divided by the error budget (1 - objective)
-- it is the burn rate: 1 spends the budget exactly over the SLO window, 14.4 spends 2 % of a 30-day
-- budget in one hour (Google SRE workbook, ch. 5). Plain LANGUAGE sql so it inlines into its callers.
CREATE OR REPLACE FUNCTION whk.slo_error_ratio(p_slo_id bigint, p_window_s integer)
RETURNS double precision
LANGUAGE sql
STABLE
AS $$
    SELECT sum(m.failures)::double precision / nullif(sum(m.attempts), 0)
    FROM whk.slos s
    JOIN whk.kpi_webhook_minute m
      ON (s.webhook_id IS NULL OR m.webhook_id = s.webhook_id)
     AND (s.consumer_id IS NULL OR m.consumer_id = s.consumer_id)
    WHERE s.id = p_slo_id
      AND m.minute >= date_trunc('minute', clock_timestamp() - make_interval(secs => p_window_s))
$$;
