-- whk.jsonschema_problem: is this a JSON Schema that whk.jsonschema_error can enforce completely?
-- Returns NULL when it is, else '<pointer into the schema>: <problem>'. Assertion keywords outside the
-- supported subset are refused rather than ignored, so a registered schema always means what it says.
CREATE OR REPLACE FUNCTION whk.jsonschema_problem(p_schema jsonb, p_path text DEFAULT '', p_root jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_root     jsonb := coalesce(p_root, p_schema);
    v_where    text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_key      text;
    v_name     text;
    v_val      jsonb;
    v_err      text;
    v_sub      jsonb;
    v_i        bigint;
    c_annotations CONSTANT text[] := ARRAY['$schema', '$id', '$comment', '$anchor', 'title', 'description',
        'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'format', 'contentEncoding',
        'contentMediaType', 'x-whk'];
    c_numbers  CONSTANT text[] := ARRAY['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
        'multipleOf'];
    c_counts   CONSTANT text[] := ARRAY['minLength', 'maxLength', 'minItems', 'maxItems', 'minProperties',
        'maxProperties'];
    c_types    CONSTANT text[] := ARRAY['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'];
BEGIN
    IF p_schema IS NULL THEN
        RETURN v_where || ': schema is missing';
    END IF;
    IF jsonb_typeof(p_schema) = 'boolean' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_schema) <> 'object' THEN
        RETURN format('%s: a schema is a JSON object or a boolean, not %s', v_where, jsonb_typeof(p_schema));
    END IF;
    FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_schema) AS e LOOP
        CONTINUE WHEN v_key = ANY (c_annotations);
        IF v_key = 'type' THEN
            IF NOT (jsonb_typeof(v_val) = 'string' AND v_val #>> '{}' = ANY (c_types))
               AND NOT (jsonb_typeof(v_val) = 'array' AND jsonb_array_length(v_val) > 0
                        AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_val) AS t
                                        WHERE jsonb_typeof(t.value) <> 'string'
                                           OR NOT (t.value #>> '{}' = ANY (c_types)))) THEN
                RETURN format('%s/type: must be one of %s or an array of them', p_path, array_to_string(c_types, ', '));
            END IF;
        ELSIF v_key = ANY (c_numbers) THEN
            IF jsonb_typeof(v_val) <> 'number' OR (v_key = 'multipleOf' AND v_val::numeric <= 0) THEN
                RETURN format('%s/%s: must be a number%s', p_path, v_key,
                              CASE WHEN v_key = 'multipleOf' THEN ' greater than 0' ELSE '' END);
            END IF;
        ELSIF v_key = ANY (c_counts) THEN
            IF jsonb_typeof(v_val) <> 'number' OR v_val::numeric < 0 OR v_val::numeric % 1 <> 0 THEN
                RETURN format('%s/%s: must be a non-negative integer', p_path, v_key);
            END IF;
        ELSIF v_key = 'pattern' THEN
            IF jsonb_typeof(v_val) <> 'string' THEN
                RETURN format('%s/pattern: must be a string', p_path);
            END IF;
            BEGIN
                PERFORM '' ~ (v_val #>> '{}');
            EXCEPTION WHEN invalid_regular_expression THEN
                RETURN format('%s/pattern: not a valid regular expression: %s', p_path, SQLERRM);
            END;
        ELSIF v_key = 'required' THEN
            IF jsonb_typeof(v_val) <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_val) AS r WHERE jsonb_typeof(r.value) <> 'string') THEN
                RETURN format('%s/required: must be an array of property names', p_path);
            END IF;
        ELSIF v_key = 'enum' THEN
            IF jsonb_typeof(v_val) <> 'array' THEN
                RETURN format('%s/enum: must be an array', p_path);
            END IF;
        ELSIF v_key IN ('const', 'uniqueItems') THEN
            IF v_key = 'uniqueItems' AND jsonb_typeof(v_val) <> 'boolean' THEN
                RETURN format('%s/uniqueItems: must be a boolean', p_path);
            END IF;
        ELSIF v_key IN ('properties', '$defs', 'definitions') THEN
            IF jsonb_typeof(v_val) <> 'object' THEN
                RETURN format('%s/%s: must be an object of schemas', p_path, v_key);
            END IF;
            FOR v_name, v_sub IN SELECT e.key, e.value FROM jsonb_each(v_val) AS e LOOP
                v_err := whk.jsonschema_problem(
                    v_sub, p_path || '/' || v_key || '/' || replace(replace(v_name, '~', '~0'), '/', '~1'), v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key IN ('additionalProperties', 'items', 'not', 'if', 'then', 'else') THEN
            v_err := whk.jsonschema_problem(v_val, p_path || '/' || v_key, v_root);
            IF v_err IS NOT NULL THEN
                RETURN v_err;
            END IF;
        ELSIF v_key IN ('allOf', 'anyOf', 'oneOf', 'prefixItems') THEN
            IF jsonb_typeof(v_val) <> 'array' OR jsonb_array_length(v_val) = 0 THEN
                RETURN format('%s/%s: must be a non-empty array of schemas', p_path, v_key);
            END IF;
            FOR v_sub, v_i IN SELECT e.value, e.ordinality - 1 FROM jsonb_array_elements(v_val) WITH ORDINALITY AS e LOOP
                v_err := whk.jsonschema_problem(v_sub, p_path || '/' || v_key || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key = '$ref' THEN
            IF jsonb_typeof(v_val) <> 'string' OR NOT (v_val #>> '{}' = '#' OR v_val #>> '{}' LIKE '#/%') THEN
                RETURN format('%s/$ref: only local references ("#", "#/$defs/name") are supported', p_path);
            END IF;
            IF v_val #>> '{}' <> '#' AND v_root #> ARRAY(
                   SELECT replace(replace(s, '~1', '/'), '~0', '~')
                   FROM unnest(string_to_array(substr(v_val #>> '{}', 3), '/')) AS s) IS NULL THEN
                RETURN format('%s/$ref: %s does not resolve inside this schema', p_path, v_val #>> '{}');
            END IF;
        ELSE
            RETURN format('%s/%s: keyword not supported by WHK''s validator', p_path, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_problem(jsonb, text, jsonb) IS
    'NULL when a JSON Schema uses only what whk.jsonschema_error enforces, else the first problem.';
