-- The latency quantile p_q estimated from cumulative histogram counts (whk.kpi_webhook_minute's lat_le_*,
-- summed): the smallest bucket bound holding at least p_q of the timed attempts, else the largest duration
-- seen. Like Prometheus' histogram_quantile, an upper bound of the true value, never an underestimate.
CREATE OR REPLACE FUNCTION whk.kpi_latency_bound(p_q double precision, p_le bigint[], p_timed bigint,
                                                 p_max double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN coalesce(p_timed, 0) = 0 THEN NULL ELSE coalesce(
        (SELECT b.bound
         FROM unnest(ARRAY[25, 100, 250, 500, 1000, 2500, 5000, 10000]::double precision[], p_le) AS b(bound, n)
         WHERE b.n >= p_q * p_timed
         ORDER BY b.bound
         LIMIT 1),
        p_max) END
$$;
