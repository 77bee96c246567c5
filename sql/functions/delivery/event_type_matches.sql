-- Does an event type match a webhook's subscriptions? Patterns are exact names, '*' or a prefix wildcard
-- such as 'order.*' (matches 'order.created' and 'order.line.added', never 'order').
-- '*' means every business event: the platform's own events (system.*, whk.*) are delivered only to
-- webhooks that name them ('system.*', 'whk.webhook.disabled'), so a catch-all subscriber is not sent
-- a dispatcher restart as if it were an ERP change.
-- PL/pgSQL on purpose (migration 0010): the SQL version could not be inlined (its EXISTS is a sublink), and
-- a non-inlined SQL function is parsed and planned again in every statement that calls it (≈ 0.5 ms per
-- routing round); PL/pgSQL keeps no query plan here at all, it only evaluates expressions.
CREATE OR REPLACE FUNCTION whk.event_type_matches(p_patterns text[], p_type text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
DECLARE
    v_pattern text;
BEGIN
    IF p_type = ANY (p_patterns) THEN
        RETURN true;
    END IF;
    IF '*' = ANY (p_patterns) AND NOT starts_with(p_type, 'system.') AND NOT starts_with(p_type, 'whk.') THEN
        RETURN true;
    END IF;
    FOREACH v_pattern IN ARRAY coalesce(p_patterns, '{}') LOOP
        IF right(v_pattern, 2) = '.*' AND starts_with(p_type, left(v_pattern, -1)) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END;
$$;
