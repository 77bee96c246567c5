-- whk.row_change: the `data` of a captured row event, {"op", "table", "new", "old", "changed"}, for
-- bindings that emit their own event types from row changes (see sql/demo/erp.sql) so that their
-- payloads look exactly like the ones whk.enable_capture writes. changed = the keys whose values differ
-- (sorted), for UPDATE only; NULL for INSERT and DELETE.
CREATE OR REPLACE FUNCTION whk.row_change(op text, tbl text, new jsonb, old jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'op', $1, 'table', $2, 'new', $3, 'old', $4,
        'changed', CASE WHEN $1 = 'UPDATE' THEN
            to_jsonb(ARRAY(SELECT e.key FROM jsonb_each($3) AS e
                            WHERE e.value IS DISTINCT FROM $4 -> e.key ORDER BY e.key)) END);
$$;
COMMENT ON FUNCTION whk.row_change(text, text, jsonb, jsonb) IS
    'The data object of a row event: {"op","table","new","old","changed"} (changed: UPDATE only).';
