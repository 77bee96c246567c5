-- whk.jsonschema_jsonpath: the compiled fast check of a JSON Schema (see whk.jsonschema_predicate), or NULL
-- when the schema needs the reference validator. Stored per schema version in
-- whk.whk_02_eventos_versoes.check_path (a generated column), so a version is compiled once, when it is
-- registered. A migration that changes the translation must recompute that column
-- (UPDATE whk.whk_02_eventos_versoes SET schema = schema).
CREATE OR REPLACE FUNCTION whk.jsonschema_jsonpath(p_schema jsonb)
RETURNS jsonpath
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_predicate text := whk.jsonschema_predicate(p_schema, '$');
BEGIN
    -- Strict mode: no automatic unwrapping of arrays (see whk.jsonschema_predicate).
    RETURN ('strict ' || v_predicate)::jsonpath;
EXCEPTION
    -- A schema whose numbers do not fit (or anything the translation did not foresee) is not worth
    -- failing a registration for: without a fast path the reference validator checks every payload.
    WHEN syntax_error OR invalid_text_representation OR numeric_value_out_of_range
         OR program_limit_exceeded THEN
        RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_jsonpath(jsonb) IS
    'The jsonpath fast check of a JSON Schema (TRUE only when valid), NULL when only the reference validator applies.';
