-- whk.route_payload_matches: does one event pass a webhook's filter, read on the body that webhook would
-- receive (for a webhook pinned to a major, the envelope rendered to it by whk.render_event; otherwise the
-- event's own envelope)? The filter is a SQL/JSON path predicate, and `@@` yields NULL rather than an error
-- on a structural mismatch, which counts as "no match". A body that could not be rendered (render_problem
-- set) is routed anyway: its delivery is created parked with the problem, and whk.render_parked_deliveries
-- applies the filter once it renders (cancelling it then if the filter is false), so no event is lost
-- silently for want of a transform.
--
-- One definition for whk.route_and_take and whk.explain. Inlined by the planner (SQL-standard body, no SET
-- clause).
CREATE OR REPLACE FUNCTION whk.route_payload_matches(filter jsonpath, body jsonb, render_problem text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT render_problem IS NOT NULL OR filter IS NULL OR coalesce(body @@ filter, false);
END;
COMMENT ON FUNCTION whk.route_payload_matches(jsonpath, jsonb, text) IS
    'Routing rule: the webhook''s filter is true on the body it would receive (rendered for its pinned major); an unrenderable body is routed, parked.';
