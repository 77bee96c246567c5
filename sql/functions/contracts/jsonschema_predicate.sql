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
-- `.type()`; a member is read only after its presence test (a missing member is an error in strict mode)
-- and `||`/`&&` short-circuit, so the guarded part is never evaluated on the wrong item.
-- Presence is `!((exists (X."k")) is unknown)`: in strict mode `exists` is TRUE for a present member and
-- UNKNOWN for a missing one, and `is unknown` makes that a plain boolean. It finds the member in place.
-- Until migration 0021 it was `exists (X.keyvalue() ? (@.key == "k"))`, which builds a {key, value, id}
-- object, value copied, for EVERY member of X on every test: for a captured row with a 900-byte column the
-- check of order.created cost ~117 us per routed event (measured in whk.route_and_take, 10 events a round).
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
            v_kind := v_kind || format('!((exists (%s.%s)) is unknown)', p_at, to_jsonb(v_key)::text);
        END LOOP;
    END IF;
    IF p_schema ? 'properties' THEN
        FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_schema -> 'properties') AS e LOOP
            v_sub := whk.jsonschema_predicate(v_val, p_at || '.' || to_jsonb(v_key)::text);
            IF v_sub IS NULL THEN
                RETURN NULL;
            ELSIF v_sub <> c_true THEN
                v_kind := v_kind || format('((exists (%s.%s)) is unknown || %s)',
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
