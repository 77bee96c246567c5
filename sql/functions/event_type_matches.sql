-- Does an event type match a webhook's subscriptions? Patterns are exact names, '*' or a prefix wildcard
-- such as 'order.*' (matches 'order.created' and 'order.line.added', never 'order').
-- '*' means every business event: the platform's own events (system.*, whk.*) are delivered only to
-- webhooks that name them ('system.*', 'whk.webhook.disabled'), so a catch-all subscriber is not sent
-- a dispatcher restart as if it were an ERP change.
-- A plain SQL function WITHOUT a `SET search_path` clause on purpose: a SET clause prevents inlining,
-- and the routing join calls this once per (event, webhook) pair (measured: the non-inlined call was a
-- large share of route_outbox). Every name in the body is schema-qualified instead.
CREATE OR REPLACE FUNCTION whk.event_type_matches(p_patterns text[], p_type text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_type OPERATOR(pg_catalog.=) ANY (p_patterns)
        OR ('*' OPERATOR(pg_catalog.=) ANY (p_patterns)
            AND NOT pg_catalog.starts_with(p_type, 'system.') AND NOT pg_catalog.starts_with(p_type, 'whk.'))
        OR EXISTS (
            SELECT 1
            FROM pg_catalog.unnest(p_patterns) AS p(pattern)
            WHERE pg_catalog.right(p.pattern, 2) OPERATOR(pg_catalog.=) '.*'
              AND pg_catalog.starts_with(p_type, pg_catalog.left(p.pattern, -1))
        );
$$;
