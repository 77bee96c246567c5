-- whk.route_payload_matches: does one event (its payload version and delivered envelope) pass a webhook's
-- payload_version pin and filter? Pinned (non-NULL) = only events of that major version; the filter is a
-- SQL/JSON path predicate over the envelope, and `@@` yields NULL rather than an error on a structural
-- mismatch, which counts as "no match".
--
-- One definition for whk.route_and_take and whk.explain; whk.explain names which half failed by calling it
-- with the other half NULL (no pin, no filter). Inlined by the planner (SQL-standard body, no SET clause).
CREATE OR REPLACE FUNCTION whk.route_payload_matches(pinned_version integer, filter jsonpath,
                                                     event_version integer, envelope jsonb)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT (pinned_version IS NULL OR pinned_version = event_version)
           AND (filter IS NULL OR coalesce(envelope @@ filter, false));
END;
COMMENT ON FUNCTION whk.route_payload_matches(integer, jsonpath, integer, jsonb) IS
    'Routing rule: the event''s version equals the webhook''s pinned version (if any) and its filter is true.';
