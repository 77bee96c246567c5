-- whk.event_transform_path: the functions that render an event type's data from one major to another,
-- in the order to apply them: the SHORTEST chain of registered transforms (whk_02_eventos_transforms),
-- e.g. 3 -> 2 -> 1 when only 3->2 and 2->1 exist; among equally short chains, the one through the lowest
-- majors. '{}' when the majors are equal; NULL when no chain exists (the caller parks the delivery).
-- A major is never visited twice, so the walk ends however the transforms are registered.
CREATE OR REPLACE FUNCTION whk.event_transform_path(p_event_type text, p_from_major integer, p_to_major integer)
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    WITH RECURSIVE walk (major, path, seen) AS (
        SELECT p_from_major, ARRAY[]::text[], ARRAY[p_from_major]
        UNION ALL
        SELECT t.to_major, w.path || t.function, w.seen || t.to_major
        FROM walk w
        JOIN whk.whk_02_eventos e ON e.name = p_event_type
        JOIN whk.whk_02_eventos_transforms t ON t.event_type_id = e.id AND t.from_major = w.major
        WHERE w.major <> p_to_major AND t.to_major <> ALL (w.seen)
    )
    SELECT w.path FROM walk w
    WHERE w.major = p_to_major
    ORDER BY cardinality(w.path), w.seen
    LIMIT 1
$$;
COMMENT ON FUNCTION whk.event_transform_path(text, integer, integer) IS
    'Shortest chain of registered transforms from one major of an event type to another ({} = same; NULL = none).';
