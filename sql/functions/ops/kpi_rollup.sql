-- Rebuild the last p_horizon_s seconds of whk.kpi_webhook_minute from the attempt log and the dead letters,
-- and forget minutes older than 31 days (the longest SLO window is 30). Run by the worker before each
-- alert evaluation. The horizon is how late an attempt may be recorded and still be counted: the dispatcher
-- writes attempts within seconds of their start, so the default 5 minutes leaves a wide margin.
-- Reading by time goes through the BRIN index on started_at and the dead-letter index, so the cost follows
-- the traffic of the horizon, not the size of the log. Returns the number of minute rows written.
CREATE OR REPLACE FUNCTION whk.kpi_rollup(p_horizon_s integer DEFAULT 300)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_from timestamptz;
    v_rows integer;
BEGIN
    IF p_horizon_s IS NULL OR p_horizon_s NOT BETWEEN 60 AND 86400 THEN
        RAISE EXCEPTION 'kpi_rollup horizon % is out of range', p_horizon_s
            USING HINT = 'pass 60 to 86400 seconds: how far back attempts may still be recorded late';
    END IF;
    -- Two roll-ups at once would delete and insert the same minutes: the second one waits.
    PERFORM pg_advisory_xact_lock(hashtext('whk.kpi_rollup'));
    v_from := date_trunc('minute', clock_timestamp() - make_interval(secs => p_horizon_s));
    DELETE FROM whk.kpi_webhook_minute m WHERE m.minute >= v_from;
    DELETE FROM whk.kpi_webhook_minute m WHERE m.minute < clock_timestamp() - interval '31 days';
    INSERT INTO whk.kpi_webhook_minute (webhook_id, minute, consumer_id, attempts, failures, retries, dead, timed,
                                        lat_le_25, lat_le_100, lat_le_250, lat_le_500, lat_le_1000, lat_le_2500,
                                        lat_le_5000, lat_le_10000, lat_max_ms)
    SELECT webhook_id, minute, w.consumer_id,
           coalesce(a.attempts, 0), coalesce(a.failures, 0), coalesce(a.retries, 0), coalesce(k.dead, 0),
           coalesce(a.timed, 0), coalesce(a.le_25, 0), coalesce(a.le_100, 0), coalesce(a.le_250, 0),
           coalesce(a.le_500, 0), coalesce(a.le_1000, 0), coalesce(a.le_2500, 0), coalesce(a.le_5000, 0),
           coalesce(a.le_10000, 0), a.max_ms
    FROM (
        SELECT t.webhook_id, date_trunc('minute', t.started_at) AS minute,
               count(*) AS attempts,
               -- The dispatcher's failure kinds (dispatcher/breaker.py): these count against the endpoint.
               count(*) FILTER (WHERE t.outcome IN ('retry', 'throttle', 'blocked')) AS failures,
               count(*) FILTER (WHERE t.attempt_no > 1) AS retries,
               count(t.duration_ms) AS timed,
               count(*) FILTER (WHERE t.duration_ms <= 25) AS le_25,
               count(*) FILTER (WHERE t.duration_ms <= 100) AS le_100,
               count(*) FILTER (WHERE t.duration_ms <= 250) AS le_250,
               count(*) FILTER (WHERE t.duration_ms <= 500) AS le_500,
               count(*) FILTER (WHERE t.duration_ms <= 1000) AS le_1000,
               count(*) FILTER (WHERE t.duration_ms <= 2500) AS le_2500,
               count(*) FILTER (WHERE t.duration_ms <= 5000) AS le_5000,
               count(*) FILTER (WHERE t.duration_ms <= 10000) AS le_10000,
               max(t.duration_ms) AS max_ms
        FROM whk.whk_03_entregas_tentativas t
        WHERE t.started_at >= v_from
        GROUP BY 1, 2
    ) a
    FULL JOIN (
        SELECT d.webhook_id, date_trunc('minute', d.dead_at) AS minute, count(*) AS dead
        FROM whk.delivery_queue d  -- dead letters are live rows
        WHERE d.status = 'dead' AND d.dead_at >= v_from
        GROUP BY 1, 2
    ) k USING (webhook_id, minute)
    -- webhook_id and minute are the merged columns of the USING join (either side may be missing).
    JOIN whk.whk_01_webhooks w ON w.id = webhook_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END;
$$;
