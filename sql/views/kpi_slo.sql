-- whk.kpi_slo: each SLO over its window: attempts, failed attempts, compliance (success ratio), the error
-- budget (failures the objective allows), how much of it is left (1 = untouched, 0 = spent, negative =
-- overspent), and the burn rate over the windows of the multi-window alerts (5 min ... 3 days).
-- error_budget = (1 - objective) x attempts; budget_remaining = 1 - failures / error_budget;
-- burn_rate_<w> = error ratio over <w> / (1 - objective).
CREATE OR REPLACE VIEW whk.kpi_slo AS
SELECT s.id AS slo_id, s.consumer_id, s.webhook_id, s.name, s.objective, s.window_days,
       a.attempts, a.failures,
       1 - a.failures::double precision / nullif(a.attempts, 0) AS compliance,
       (1 - s.objective) * a.attempts AS error_budget,
       1 - a.failures / nullif((1 - s.objective) * a.attempts, 0) AS budget_remaining,
       whk.slo_error_ratio(s.id, 300) / (1 - s.objective) AS burn_rate_5m,
       whk.slo_error_ratio(s.id, 1800) / (1 - s.objective) AS burn_rate_30m,
       whk.slo_error_ratio(s.id, 3600) / (1 - s.objective) AS burn_rate_1h,
       whk.slo_error_ratio(s.id, 7200) / (1 - s.objective) AS burn_rate_2h,
       whk.slo_error_ratio(s.id, 21600) / (1 - s.objective) AS burn_rate_6h,
       whk.slo_error_ratio(s.id, 86400) / (1 - s.objective) AS burn_rate_1d,
       whk.slo_error_ratio(s.id, 259200) / (1 - s.objective) AS burn_rate_3d
FROM whk.slos s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(m.attempts), 0)::bigint AS attempts, coalesce(sum(m.failures), 0)::bigint AS failures
    FROM whk.kpi_webhook_minute m
    WHERE m.minute >= date_trunc('minute', clock_timestamp() - make_interval(days => s.window_days))
      AND (s.webhook_id IS NULL OR m.webhook_id = s.webhook_id)
      AND (s.consumer_id IS NULL OR m.consumer_id = s.consumer_id)
) a;
COMMENT ON VIEW whk.kpi_slo IS 'SLO compliance, error budget left and burn rates (from whk.kpi_webhook_minute).';
