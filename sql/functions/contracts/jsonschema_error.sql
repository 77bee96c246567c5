-- whk.jsonschema_error: validate a JSON value against a JSON Schema (draft 2020-12 subset) in SQL.
-- Returns NULL when valid, else the first error as '<JSON pointer>: <what is wrong>'.
-- Why in PL/pgSQL: strict event types are validated inside the emitting transaction, with no round trip.
-- Supported assertions (anything else is refused at registration by whk.jsonschema_problem, so no rule
-- is ever silently ignored): type, enum, const, required, properties, additionalProperties,
-- minProperties, maxProperties, items, prefixItems, minItems, maxItems, uniqueItems, minimum, maximum,
-- exclusiveMinimum, exclusiveMaximum, multipleOf, minLength, maxLength, pattern (PostgreSQL regular
-- expressions), allOf, anyOf, oneOf, not, if/then/else, local $ref ('#', '#/$defs/...').
-- Annotations (title, description, default, examples, format, ...) do not assert anything.
CREATE OR REPLACE FUNCTION whk.jsonschema_error(
    p_schema   jsonb,
    p_instance jsonb,
    p_path     text DEFAULT '',
    p_root     jsonb DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_root  jsonb := coalesce(p_root, p_schema);
    v_where text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_inst  jsonb := coalesce(p_instance, 'null'::jsonb);  -- SQL NULL is validated as JSON null
    v_kind  text;
    v_types text[];
    v_err   text;
    v_key   text;
    v_sub   jsonb;
    v_num   numeric;
    v_str   text;
    v_i     bigint;
    v_n     integer;
BEGIN
    IF p_schema IS NULL OR p_schema = 'true'::jsonb THEN
        RETURN NULL;
    END IF;
    IF p_schema = 'false'::jsonb THEN
        RETURN v_where || ': no value is allowed here';
    END IF;
    IF jsonb_typeof(p_schema) <> 'object' THEN
        RETURN NULL;
    END IF;
    v_kind := jsonb_typeof(v_inst);

    IF p_schema ? '$ref' THEN
        v_str := p_schema ->> '$ref';
        IF v_str = '#' THEN
            v_sub := v_root;
        ELSIF v_str LIKE '#/%' THEN
            v_sub := v_root #> ARRAY(SELECT replace(replace(s, '~1', '/'), '~0', '~')
                                     FROM unnest(string_to_array(substr(v_str, 3), '/')) AS s);
        END IF;
        IF v_sub IS NULL THEN
            RETURN format('%s: unresolvable $ref %s', v_where, v_str);
        END IF;
        v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
        IF v_err IS NOT NULL THEN
            RETURN v_err;
        END IF;
    END IF;

    IF p_schema ? 'type' THEN
        v_types := CASE jsonb_typeof(p_schema -> 'type')
                       WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(p_schema -> 'type'))
                       ELSE ARRAY[p_schema ->> 'type'] END;
        IF NOT (v_kind = ANY (v_types)
                OR (v_kind = 'number' AND 'integer' = ANY (v_types) AND v_inst::numeric % 1 = 0)) THEN
            RETURN format('%s: expected %s, got %s', v_where, array_to_string(v_types, ' or '), v_kind);
        END IF;
    END IF;

    IF p_schema ? 'const' AND v_inst IS DISTINCT FROM p_schema -> 'const' THEN
        RETURN format('%s: must be %s', v_where, left((p_schema -> 'const')::text, 200));
    END IF;

    IF p_schema ? 'enum' AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_schema -> 'enum') AS e
                                          WHERE e.value = v_inst) THEN
        RETURN format('%s: %s is not one of %s', v_where, left(v_inst::text, 100),
                      left((p_schema -> 'enum')::text, 200));
    END IF;

    IF v_kind = 'number' THEN
        v_num := v_inst::numeric;
        IF p_schema ? 'minimum' AND v_num < (p_schema ->> 'minimum')::numeric THEN
            RETURN format('%s: %s is less than the minimum %s', v_where, v_num, p_schema ->> 'minimum');
        END IF;
        IF p_schema ? 'exclusiveMinimum' AND v_num <= (p_schema ->> 'exclusiveMinimum')::numeric THEN
            RETURN format('%s: %s must be greater than %s', v_where, v_num, p_schema ->> 'exclusiveMinimum');
        END IF;
        IF p_schema ? 'maximum' AND v_num > (p_schema ->> 'maximum')::numeric THEN
            RETURN format('%s: %s is greater than the maximum %s', v_where, v_num, p_schema ->> 'maximum');
        END IF;
        IF p_schema ? 'exclusiveMaximum' AND v_num >= (p_schema ->> 'exclusiveMaximum')::numeric THEN
            RETURN format('%s: %s must be less than %s', v_where, v_num, p_schema ->> 'exclusiveMaximum');
        END IF;
        IF p_schema ? 'multipleOf' AND v_num % (p_schema ->> 'multipleOf')::numeric <> 0 THEN
            RETURN format('%s: %s is not a multiple of %s', v_where, v_num, p_schema ->> 'multipleOf');
        END IF;
    ELSIF v_kind = 'string' THEN
        v_str := v_inst #>> '{}';
        IF p_schema ? 'minLength' AND char_length(v_str) < (p_schema ->> 'minLength')::integer THEN
            RETURN format('%s: shorter than %s characters', v_where, p_schema ->> 'minLength');
        END IF;
        IF p_schema ? 'maxLength' AND char_length(v_str) > (p_schema ->> 'maxLength')::integer THEN
            RETURN format('%s: longer than %s characters', v_where, p_schema ->> 'maxLength');
        END IF;
        IF p_schema ? 'pattern' AND v_str !~ (p_schema ->> 'pattern') THEN
            RETURN format('%s: does not match the pattern %s', v_where, p_schema ->> 'pattern');
        END IF;
    ELSIF v_kind = 'object' THEN
        IF p_schema ? 'required' THEN
            FOR v_key IN SELECT jsonb_array_elements_text(p_schema -> 'required') LOOP
                IF NOT v_inst ? v_key THEN
                    RETURN format('%s: required property "%s" is missing', v_where, v_key);
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'properties' THEN
            FOR v_key, v_sub IN SELECT e.key, e.value FROM jsonb_each(p_schema -> 'properties') AS e LOOP
                IF v_inst ? v_key THEN
                    v_err := whk.jsonschema_error(
                        v_sub, v_inst -> v_key,
                        p_path || '/' || replace(replace(v_key, '~', '~0'), '/', '~1'), v_root);
                    IF v_err IS NOT NULL THEN
                        RETURN v_err;
                    END IF;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'additionalProperties' AND p_schema -> 'additionalProperties' <> 'true'::jsonb THEN
            FOR v_key IN SELECT k FROM jsonb_object_keys(v_inst) AS k
                          WHERE NOT coalesce(p_schema -> 'properties' ? k, false) LOOP
                IF p_schema -> 'additionalProperties' = 'false'::jsonb THEN
                    RETURN format('%s: additional property "%s" is not allowed', v_where, v_key);
                END IF;
                v_err := whk.jsonschema_error(
                    p_schema -> 'additionalProperties', v_inst -> v_key,
                    p_path || '/' || replace(replace(v_key, '~', '~0'), '/', '~1'), v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'minProperties' OR p_schema ? 'maxProperties' THEN
            SELECT count(*) INTO v_n FROM jsonb_object_keys(v_inst);
            IF v_n < coalesce((p_schema ->> 'minProperties')::integer, 0) THEN
                RETURN format('%s: fewer than %s properties', v_where, p_schema ->> 'minProperties');
            END IF;
            IF v_n > coalesce((p_schema ->> 'maxProperties')::integer, v_n) THEN
                RETURN format('%s: more than %s properties', v_where, p_schema ->> 'maxProperties');
            END IF;
        END IF;
    ELSIF v_kind = 'array' THEN
        v_n := jsonb_array_length(v_inst);
        IF v_n < coalesce((p_schema ->> 'minItems')::integer, 0) THEN
            RETURN format('%s: fewer than %s items', v_where, p_schema ->> 'minItems');
        END IF;
        IF v_n > coalesce((p_schema ->> 'maxItems')::integer, v_n) THEN
            RETURN format('%s: more than %s items', v_where, p_schema ->> 'maxItems');
        END IF;
        IF p_schema -> 'uniqueItems' = 'true'::jsonb
           AND (SELECT count(DISTINCT e.value) FROM jsonb_array_elements(v_inst) AS e) < v_n THEN
            RETURN format('%s: items are not unique', v_where);
        END IF;
        IF p_schema ? 'prefixItems' THEN
            FOR v_sub, v_i IN SELECT e.value, e.ordinality - 1
                               FROM jsonb_array_elements(p_schema -> 'prefixItems') WITH ORDINALITY AS e LOOP
                EXIT WHEN v_i >= v_n;
                v_err := whk.jsonschema_error(v_sub, v_inst -> v_i::integer, p_path || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'items' THEN
            FOR v_i IN coalesce(jsonb_array_length(p_schema -> 'prefixItems'), 0) .. v_n - 1 LOOP
                v_err := whk.jsonschema_error(p_schema -> 'items', v_inst -> v_i::integer,
                                              p_path || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
    END IF;

    IF p_schema ? 'allOf' THEN
        FOR v_sub IN SELECT e.value FROM jsonb_array_elements(p_schema -> 'allOf') AS e LOOP
            v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
            IF v_err IS NOT NULL THEN
                RETURN v_err;
            END IF;
        END LOOP;
    END IF;
    IF p_schema ? 'anyOf' THEN
        v_str := NULL;
        FOR v_sub IN SELECT e.value FROM jsonb_array_elements(p_schema -> 'anyOf') AS e LOOP
            v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
            IF v_err IS NULL THEN
                v_str := 'ok';
                EXIT;
            END IF;
        END LOOP;
        IF v_str IS NULL THEN
            RETURN format('%s: matches none of the anyOf schemas', v_where);
        END IF;
    END IF;
    IF p_schema ? 'oneOf' THEN
        SELECT count(*) INTO v_n FROM jsonb_array_elements(p_schema -> 'oneOf') AS e
         WHERE whk.jsonschema_error(e.value, v_inst, p_path, v_root) IS NULL;
        IF v_n <> 1 THEN
            RETURN format('%s: matches %s of the oneOf schemas instead of exactly one', v_where, v_n);
        END IF;
    END IF;
    IF p_schema ? 'not' AND whk.jsonschema_error(p_schema -> 'not', v_inst, p_path, v_root) IS NULL THEN
        RETURN format('%s: must not match the schema under "not"', v_where);
    END IF;
    IF p_schema ? 'if' THEN
        IF whk.jsonschema_error(p_schema -> 'if', v_inst, p_path, v_root) IS NULL THEN
            RETURN whk.jsonschema_error(p_schema -> 'then', v_inst, p_path, v_root);
        END IF;
        RETURN whk.jsonschema_error(p_schema -> 'else', v_inst, p_path, v_root);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_error(jsonb, jsonb, text, jsonb) IS
    'First JSON Schema (2020-12 subset) violation of a value as "<pointer>: <message>", NULL when valid.';
