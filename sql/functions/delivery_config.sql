-- One global setting from whk_05_configuracoes (NULL when absent). Delivery functions read their
-- defaults through this so a DBA can change the schedule, breaker or limits with a plain UPDATE.
CREATE OR REPLACE FUNCTION whk.delivery_config(p_key text)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT value FROM whk.whk_05_configuracoes WHERE key = p_key;
$$;
