-- One global setting from whk_05_configuracoes (NULL when absent). Delivery functions read their
-- defaults through this so a DBA can change the schedule, breaker or limits with a plain UPDATE.
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and is parsed and planned again at
-- every call, and the routing, claim and recording statements each call it once per round trip; PL/pgSQL
-- keeps the query's plan for the session.
CREATE OR REPLACE FUNCTION whk.delivery_config(p_key text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    RETURN (SELECT c.value FROM whk.whk_05_configuracoes c WHERE c.key = p_key);
END;
$$;
