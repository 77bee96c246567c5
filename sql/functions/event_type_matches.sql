-- Does an event type match a webhook's subscriptions? Patterns are exact names, '*' (everything) or a
-- prefix wildcard such as 'order.*' (matches 'order.created' and 'order.line.added', never 'order').
-- A plain SQL function so the planner can inline it into the routing join.
CREATE OR REPLACE FUNCTION whk.event_type_matches(p_patterns text[], p_type text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
    SELECT p_type = ANY (p_patterns)
        OR '*' = ANY (p_patterns)
        OR EXISTS (
            SELECT 1
            FROM unnest(p_patterns) AS p(pattern)
            WHERE right(p.pattern, 2) = '.*'
              AND starts_with(p_type, left(p.pattern, -1))
        );
$$;
