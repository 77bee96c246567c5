-- Each schema version carries its compiled fast check (migration 0011): the JSON Schema translated into a
-- jsonpath predicate, evaluated in C by whk.validate_payload before (and instead of) the PL/pgSQL reference
-- validator. Written by the trigger whk_02_eventos_versoes_check_path; NULL = the schema needs the
-- reference validator for every payload (see whk.jsonschema_predicate for what is translated).
ALTER TABLE whk.whk_02_eventos_versoes
    ADD COLUMN check_path jsonpath;
COMMENT ON COLUMN whk.whk_02_eventos_versoes.check_path IS
    'Compiled fast check of schema (TRUE only for valid data); NULL = validated by whk.jsonschema_error only.';
