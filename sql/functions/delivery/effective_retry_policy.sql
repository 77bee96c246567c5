-- A webhook's retry policy as it is applied: the global 'retry.policy' (whk_05_configuracoes) with the
-- webhook's own retry_policy laid over it member by member. This is the one source of the retry schedule:
-- the dispatcher loads it with each webhook (dispatcher/queries.sql, webhooks) and whk.expire_acks counts
-- its steps, so a DBA's UPDATE of the setting changes both. Without the setting and without an override
-- there is no schedule: the first failure is final, for both alike.
CREATE OR REPLACE FUNCTION whk.effective_retry_policy(p_override jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    RETURN coalesce(whk.delivery_config('retry.policy'), '{}'::jsonb) || coalesce(p_override, '{}'::jsonb);
END;
$$;
