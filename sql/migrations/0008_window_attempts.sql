-- 0008 window_attempts: A tenant's attempt windows (dashboard, metrics) are read webhook by webhook (whk.window_attempts): with month partitions the planner read every tenant's attempts of the window through the time index.
-- Written by `whk db new-migration`: each block below is the text of the named file.
BEGIN;
SELECT whk.migration_begin(8, 'window_attempts');

-- >>> sql/functions/api/window_attempts.sql
-- whk.window_attempts: the attempts started in [p_since, p_until) by the webhooks p_webhooks, or by every
-- webhook when p_webhooks is NULL: what the dashboard's and the metrics' time windows read.
-- A tenant's attempts are read webhook by webhook through (webhook_id, id DESC), with the window as an id
-- bound too (attempt ids are drawn at the flush, so they grow with time), so a tenant's read is its own
-- attempts whatever the other tenants send and however large a partition is; every tenant's attempts are
-- read through the started_at index. A single OR of both forms let the planner pick the time index for a
-- tenant once a partition held more than the window (a month partition at the default retention): it
-- read every tenant's attempts of the window to keep one tenant's.
-- One statement, no SET clause: the planner inlines it, so the caller's filters and aggregates reach the
-- scans and partition pruning sees the window.
CREATE OR REPLACE FUNCTION whk.window_attempts(p_since timestamptz, p_until timestamptz, p_webhooks bigint[])
RETURNS SETOF whk.whk_03_entregas_tentativas
LANGUAGE sql
STABLE
AS $$
    SELECT t.*
    FROM whk.whk_03_entregas_tentativas t
    WHERE p_webhooks IS NULL AND t.started_at >= p_since AND t.started_at < p_until
    UNION ALL
    SELECT x.*
    FROM unnest(p_webhooks) AS w(id)
    CROSS JOIN LATERAL (
        SELECT a.*
        FROM whk.whk_03_entregas_tentativas a
        WHERE a.webhook_id = w.id AND a.started_at >= p_since AND a.started_at < p_until
          AND a.id >= (SELECT min(f.id) FROM whk.whk_03_entregas_tentativas f WHERE f.started_at >= p_since)
    ) x
$$;
COMMENT ON FUNCTION whk.window_attempts(timestamptz, timestamptz, bigint[]) IS
    'Attempts started in [since, until) by these webhooks (NULL: every webhook); read per webhook for a tenant.';
-- <<< sql/functions/api/window_attempts.sql

COMMIT;
