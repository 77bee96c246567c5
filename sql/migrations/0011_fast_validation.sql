-- 0011 fast_validation: event payloads are checked by a compiled jsonpath before the PL/pgSQL validator.
-- Why: whk.jsonschema_error took ~180-500 us per payload of a registered type, on the routing path of
-- every event (and inside ERP transactions emitting strict types); the compiled check takes ~13 us and
-- the reference now runs only for payloads the check does not accept. See whk.jsonschema_predicate.
BEGIN;
SELECT whk.migration_begin(11, 'fast_validation');

-- Each schema version carries its compiled fast check (migration 0011): the JSON Schema translated into a
-- jsonpath predicate, evaluated in C by whk.validate_payload before (and instead of) the PL/pgSQL reference
-- validator. Written by the trigger whk_02_eventos_versoes_check_path; NULL = the schema needs the
-- reference validator for every payload (see whk.jsonschema_predicate for what is translated).
ALTER TABLE whk.whk_02_eventos_versoes
    ADD COLUMN check_path jsonpath;
COMMENT ON COLUMN whk.whk_02_eventos_versoes.check_path IS
    'Compiled fast check of schema (TRUE only for valid data); NULL = validated by whk.jsonschema_error only.';

-- whk.jsonschema_predicate: translate a JSON Schema (the subset whk.jsonschema_error implements) into an
-- SQL/JSON path predicate over the JSON item written p_at ('$' at the top, '@' inside a filter), or NULL
-- when the schema uses an assertion this translation cannot express EXACTLY.
--
-- Why: whk.jsonschema_error walks the schema in PL/pgSQL, ~180 us for a small event schema, paid for every
-- routed event of a registered type and inside every ERP transaction that emits a strict type. The same
-- check as a jsonpath runs in C (`data @@ path`) in a few microseconds. whk.validate_payload uses it as a
-- fast path: TRUE = valid; anything else (FALSE, or NULL when the predicate is unknown) falls back to
-- whk.jsonschema_error, which stays the reference and writes the error message. So the translation only
-- has to be SOUND: it may answer FALSE/unknown for a valid value (slower, still correct) but never TRUE
-- for an invalid one. tests/db/test_jsonschema_fast_path.py checks it against the reference, both ways.
--
-- How it is kept exact: the path runs in strict mode (whk.jsonschema_jsonpath prefixes `strict`), so arrays
-- are never unwrapped (lax mode would apply a filter to the elements of an array item, or compare a scalar
-- with each element of an array). Every keyword that applies to one JSON type is guarded by the item's
-- `.type()`; a member is read only after `.keyvalue()` showed it exists (a missing member is an error in
-- strict mode) and `||`/`&&` short-circuit, so the guarded part is never evaluated on the wrong item.
-- Inside filters an unknown predicate is counted as a failure (`is unknown`), so an error can never make a
-- filter drop the item that breaks the rule.
--
-- Not translated (NULL, the reference validates): $ref, minLength/maxLength (PostgreSQL 15 jsonpath has
-- no string length), pattern (like_regex is not the `~` dialect), minProperties/maxProperties,
-- uniqueItems, oneOf, prefixItems, schema-valued additionalProperties, const/enum with objects or arrays.
-- Keywords the reference ignores (annotations, format, $defs, ...) are ignored here too.
CREATE OR REPLACE FUNCTION whk.jsonschema_predicate(p_schema jsonb, p_at text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_true  CONSTANT text := '(1 == 1)';
    c_false CONSTANT text := '(1 == 2)';
    v_all   text[] := '{}';   -- conjunction over every kind
    v_kind  text[];           -- conjunction of the rules of one kind
    v_alts  text[];
    v_sub   text;
    v_cond  text;
    v_key   text;
    v_val   jsonb;
    v_item  jsonb;
    v_t     text;
BEGIN
    IF p_schema = 'false'::jsonb THEN
        RETURN c_false;
    END IF;
    IF p_schema IS NULL OR jsonb_typeof(p_schema) <> 'object' THEN
        RETURN c_true;  -- the reference: no schema, `true` and other non-object schemas assert nothing
    END IF;
    IF p_schema ?| ARRAY['$ref', 'minLength', 'maxLength', 'pattern', 'minProperties', 'maxProperties',
                         'uniqueItems', 'oneOf', 'prefixItems']
       OR (p_schema ? 'additionalProperties'
           AND p_schema -> 'additionalProperties' NOT IN ('true'::jsonb, 'false'::jsonb)) THEN
        RETURN NULL;
    END IF;

    IF p_schema ? 'type' THEN
        v_alts := '{}';
        FOR v_t IN SELECT t FROM jsonb_array_elements_text(CASE jsonb_typeof(p_schema -> 'type')
                                                               WHEN 'array' THEN p_schema -> 'type'
                                                               ELSE jsonb_build_array(p_schema -> 'type') END) AS t LOOP
            IF v_t = 'integer' THEN
                v_alts := v_alts || format('(%1$s.type() == "number" && %1$s.floor() == %1$s)', p_at);
            ELSIF v_t IN ('object', 'array', 'string', 'number', 'boolean', 'null') THEN
                v_alts := v_alts || format('%s.type() == "%s"', p_at, v_t);
            END IF;  -- an unknown type name matches nothing (as in the reference)
        END LOOP;
        v_all := v_all || CASE WHEN cardinality(v_alts) = 0 THEN c_false
                               ELSE '(' || array_to_string(v_alts, ' || ') || ')' END;
    END IF;

    -- const / enum: scalars only, compared under a type guard.
    FOR v_key, v_val IN
        SELECT 'const', p_schema -> 'const' WHERE p_schema ? 'const'
        UNION ALL
        SELECT 'enum', p_schema -> 'enum' WHERE p_schema ? 'enum'
    LOOP
        v_alts := '{}';
        FOR v_item IN SELECT e FROM jsonb_array_elements(CASE WHEN v_key = 'const' THEN jsonb_build_array(v_val)
                                                              ELSE v_val END) AS e LOOP
            IF jsonb_typeof(v_item) IN ('object', 'array') THEN
                RETURN NULL;
            END IF;
            v_alts := v_alts || CASE jsonb_typeof(v_item)
                WHEN 'null' THEN format('%s.type() == "null"', p_at)
                WHEN 'string' THEN format('(%1$s.type() == "string" && %1$s == %2$s)', p_at, v_item::text)
                WHEN 'number' THEN format('(%1$s.type() == "number" && %1$s == %2$s)', p_at, (v_item #>> '{}')::numeric)
                ELSE format('(%1$s.type() == "boolean" && %1$s == %2$s)', p_at, v_item::text)
                END;
        END LOOP;
        v_all := v_all || CASE WHEN cardinality(v_alts) = 0 THEN c_false
                               ELSE '(' || array_to_string(v_alts, ' || ') || ')' END;
    END LOOP;

    -- Numbers.
    v_kind := '{}';
    FOR v_key, v_t IN SELECT k, o FROM (VALUES ('minimum', '>='), ('exclusiveMinimum', '>'), ('maximum', '<='),
                                               ('exclusiveMaximum', '<')) AS r(k, o)
                       WHERE p_schema ? r.k LOOP
        v_kind := v_kind || format('%s %s %s', p_at, v_t, (p_schema ->> v_key)::numeric);
    END LOOP;
    IF p_schema ? 'multipleOf' THEN
        v_kind := v_kind || format('%s %% %s == 0', p_at, (p_schema ->> 'multipleOf')::numeric);
    END IF;
    IF cardinality(v_kind) > 0 THEN
        v_all := v_all || format('(%s.type() != "number" || (%s))', p_at, array_to_string(v_kind, ' && '));
    END IF;

    -- Objects.
    v_kind := '{}';
    IF p_schema ? 'required' THEN
        FOR v_key IN SELECT jsonb_array_elements_text(p_schema -> 'required') LOOP
            v_kind := v_kind || format('exists (%s.keyvalue() ? (@.key == %s))', p_at, to_jsonb(v_key)::text);
        END LOOP;
    END IF;
    IF p_schema ? 'properties' THEN
        FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_schema -> 'properties') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at || '.' || to_jsonb(v_key)::text);
            IF v_sub IS NULL THEN
                RETURN NULL;
            ELSIF v_sub <> c_true THEN
                v_kind := v_kind || format('(!exists (%s.keyvalue() ? (@.key == %s)) || %s)',
                                           p_at, to_jsonb(v_key)::text, v_sub);
            END IF;
        END LOOP;
    END IF;
    IF p_schema -> 'additionalProperties' = 'false'::jsonb THEN
        v_cond := (SELECT string_agg(format('@.key != %s', to_jsonb(k)::text), ' && ')
                   FROM jsonb_object_keys(coalesce(p_schema -> 'properties', '{}')) AS k);
        v_kind := v_kind || format('!exists (%s.keyvalue()%s)', p_at,
                                   CASE WHEN v_cond IS NULL THEN '' ELSE ' ? (' || v_cond || ')' END);
    END IF;
    IF cardinality(v_kind) > 0 THEN
        v_all := v_all || format('(%s.type() != "object" || (%s))', p_at, array_to_string(v_kind, ' && '));
    END IF;

    -- Arrays.
    v_kind := '{}';
    IF p_schema ? 'minItems' THEN
        v_kind := v_kind || format('%s.size() >= %s', p_at, (p_schema ->> 'minItems')::integer);
    END IF;
    IF p_schema ? 'maxItems' THEN
        v_kind := v_kind || format('%s.size() <= %s', p_at, (p_schema ->> 'maxItems')::integer);
    END IF;
    IF p_schema ? 'items' THEN
        v_sub := whk.jsonschema_predicate(p_schema -> 'items', '@');
        IF v_sub IS NULL THEN
            RETURN NULL;
        ELSIF v_sub <> c_true THEN
            v_kind := v_kind || format('!exists (%s[*] ? (!(%s) || (%s) is unknown))', p_at, v_sub, v_sub);
        END IF;
    END IF;
    IF cardinality(v_kind) > 0 THEN
        v_all := v_all || format('(%s.type() != "array" || (%s))', p_at, array_to_string(v_kind, ' && '));
    END IF;

    -- Combinators.
    IF p_schema ? 'allOf' THEN
        FOR v_val IN SELECT e FROM jsonb_array_elements(p_schema -> 'allOf') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at);
            IF v_sub IS NULL THEN
                RETURN NULL;
            END IF;
            v_all := v_all || v_sub;
        END LOOP;
    END IF;
    IF p_schema ? 'anyOf' THEN
        v_alts := '{}';
        FOR v_val IN SELECT e FROM jsonb_array_elements(p_schema -> 'anyOf') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at);
            IF v_sub IS NULL THEN
                RETURN NULL;
            END IF;
            v_alts := v_alts || v_sub;
        END LOOP;
        v_all := v_all || CASE WHEN cardinality(v_alts) = 0 THEN c_false
                               ELSE '(' || array_to_string(v_alts, ' || ') || ')' END;
    END IF;
    IF p_schema ? 'not' THEN
        v_sub := whk.jsonschema_predicate(p_schema -> 'not', p_at);
        IF v_sub IS NULL THEN
            RETURN NULL;
        END IF;
        v_all := v_all || format('!(%s)', v_sub);
    END IF;
    IF p_schema ? 'if' THEN
        v_cond := whk.jsonschema_predicate(p_schema -> 'if', p_at);
        v_sub := whk.jsonschema_predicate(p_schema -> 'then', p_at);
        v_t := whk.jsonschema_predicate(p_schema -> 'else', p_at);
        IF v_cond IS NULL OR v_sub IS NULL OR v_t IS NULL THEN
            RETURN NULL;
        END IF;
        v_all := v_all || format('((%1$s && %2$s) || (!(%1$s) && %3$s))', v_cond, v_sub, v_t);
    END IF;

    RETURN CASE WHEN cardinality(v_all) = 0 THEN c_true ELSE '(' || array_to_string(v_all, ' && ') || ')' END;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_predicate(jsonb, text) IS
    'The jsonpath predicate equivalent to a JSON Schema at a path, or NULL when it cannot be expressed exactly.';

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

-- whk.validate_payload: check an event body (the envelope stored in whk.outbox.payload) against the
-- schema of its type and major version. NULL = valid, else '<JSON pointer>: <what is wrong>'.
-- The router calls it for non-strict types and stores the answer in outbox.valid / validation_error;
-- whk.emit calls it for strict types before writing anything. version NULL = the type's current major;
-- the latest minor of that major is used (minors are backward compatible by construction).
CREATE OR REPLACE FUNCTION whk.validate_payload(event_type text, version integer, payload jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type    text := validate_payload.event_type;
    p_version integer := validate_payload.version;
    v_schema  jsonb;
    v_check   jsonpath;
    v_major   integer;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RETURN '/: expected the envelope object {"type", "timestamp", "data"}';
    END IF;
    IF payload -> 'type' IS DISTINCT FROM to_jsonb(p_type) THEN
        RETURN format('/type: expected "%s", got %s', p_type, coalesce((payload -> 'type')::text, 'nothing'));
    END IF;
    IF jsonb_typeof(payload -> 'timestamp') IS DISTINCT FROM 'string' THEN
        RETURN '/timestamp: expected an ISO 8601 string';
    END IF;
    IF NOT payload ? 'data' THEN
        RETURN '/: required property "data" is missing';
    END IF;

    -- One lookup: the type's current major and the latest minor of the requested major.
    SELECT e.current_major, v.schema, v.check_path INTO v_major, v_schema, v_check
      FROM whk.whk_02_eventos e
      LEFT JOIN LATERAL (SELECT x.schema, x.check_path
                           FROM whk.whk_02_eventos_versoes x
                          WHERE x.event_type_id = e.id AND x.major = coalesce(p_version, e.current_major)
                          ORDER BY x.minor DESC
                          LIMIT 1) v ON true
     WHERE e.name = p_type;
    IF NOT FOUND THEN
        RETURN format('/type: unknown event type "%s"', p_type);
    END IF;
    IF v_schema IS NULL THEN
        RETURN format('/type: "%s" has no version %s', p_type, coalesce(p_version, v_major));
    END IF;
    -- Fast path: the schema compiled to jsonpath (whk.jsonschema_predicate) says TRUE only for valid data,
    -- ~40x cheaper than the reference. Anything else (invalid, or unknown) goes to the reference, which
    -- decides and names the first error.
    IF v_check IS NOT NULL AND coalesce((payload -> 'data') @@ v_check, false) THEN
        RETURN NULL;
    END IF;
    RETURN whk.jsonschema_error(v_schema, payload -> 'data', '/data');
END;
$$;
COMMENT ON FUNCTION whk.validate_payload(text, integer, jsonb) IS
    'NULL when an event envelope matches the schema of its type/major, else the first error (JSON pointer: message).';

-- whk.event_version_check_path: compile a schema version's fast check (whk.jsonschema_jsonpath) whenever
-- its schema is written, so validation never compiles at run time and the stored check always matches
-- the stored schema.
CREATE OR REPLACE FUNCTION whk.event_version_check_path()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    NEW.check_path := whk.jsonschema_jsonpath(NEW.schema);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.event_version_check_path() IS
    'Trigger: keep whk_02_eventos_versoes.check_path compiled from schema.';

CREATE TRIGGER whk_02_eventos_versoes_check_path
    BEFORE INSERT OR UPDATE OF schema ON whk.whk_02_eventos_versoes
    FOR EACH ROW EXECUTE FUNCTION whk.event_version_check_path();

-- Versions written before this trigger existed (the seeded catalog of a fresh install, or every version
-- of an upgraded one) are compiled now; the trigger does it.
UPDATE whk.whk_02_eventos_versoes SET schema = schema WHERE check_path IS NULL;

COMMIT;
