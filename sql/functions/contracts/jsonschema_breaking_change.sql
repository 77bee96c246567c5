-- whk.jsonschema_breaking_change: would replacing schema p_old by p_new break anyone within one major?
-- Returns NULL when the change is backward compatible (it may become a new minor version), else the
-- first breaking difference as '<pointer into the schema>: <why>'.
--
-- Compatible ("additive") changes: new optional properties (unless the old schema closed the object with
-- additionalProperties: false), new enum values, removed or looser bounds/enum/const/pattern, annotation
-- edits (title, description, examples, default, ...).
-- Breaking changes: a property removed or changed incompatibly; `required` gaining or losing a name (old
-- events or old consumers would no longer agree with it); `type` changing at all; an enum losing a value;
-- a const, enum or pattern appearing or changing; a bound appearing or tightening; additionalProperties
-- becoming stricter; any change inside allOf/anyOf/oneOf/not/if/then/else/$ref, which this check cannot
-- prove compatible (publish a new major for those).
CREATE OR REPLACE FUNCTION whk.jsonschema_breaking_change(p_old jsonb, p_new jsonb, p_path text DEFAULT '')
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_where text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_old   jsonb := CASE WHEN p_old = 'true'::jsonb THEN '{}'::jsonb ELSE p_old END;
    v_new   jsonb := CASE WHEN p_new = 'true'::jsonb THEN '{}'::jsonb ELSE p_new END;
    v_key   text;
    v_o     jsonb;
    v_n     jsonb;
    v_err   text;
    v_names text;
    c_annotations CONSTANT text[] := ARRAY['$schema', '$id', '$comment', '$anchor', 'title', 'description',
        'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'x-whk'];
    c_lower CONSTANT text[] := ARRAY['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'];
    c_upper CONSTANT text[] := ARRAY['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'];
BEGIN
    IF v_old IS NOT DISTINCT FROM v_new THEN
        RETURN NULL;
    END IF;
    IF v_new = '{}'::jsonb THEN
        RETURN NULL;  -- anything goes now: looser never breaks old events
    END IF;
    IF jsonb_typeof(v_old) <> 'object' OR jsonb_typeof(v_new) <> 'object' THEN
        RETURN format('%s: the schema changed from %s to %s', v_where, left(p_old::text, 80), left(p_new::text, 80));
    END IF;

    FOR v_key IN SELECT k FROM jsonb_object_keys(v_old) AS k UNION SELECT k FROM jsonb_object_keys(v_new) AS k LOOP
        v_o := v_old -> v_key;
        v_n := v_new -> v_key;
        CONTINUE WHEN v_o IS NOT DISTINCT FROM v_n OR v_key = ANY (c_annotations);

        IF v_key = 'type' THEN
            IF v_o IS NULL
               OR v_n IS NULL
               OR ARRAY(SELECT t FROM jsonb_array_elements_text(
                            CASE jsonb_typeof(v_o) WHEN 'array' THEN v_o ELSE jsonb_build_array(v_o) END) AS t ORDER BY t)
                  <> ARRAY(SELECT t FROM jsonb_array_elements_text(
                            CASE jsonb_typeof(v_n) WHEN 'array' THEN v_n ELSE jsonb_build_array(v_n) END) AS t ORDER BY t)
            THEN
                IF v_n IS NULL THEN
                    CONTINUE;  -- no type constraint any more: looser
                END IF;
                RETURN format('%s/type: changed from %s to %s', p_path, coalesce(v_o::text, 'any'), v_n::text);
            END IF;
        ELSIF v_key = 'required' THEN
            SELECT string_agg(format('"%s"', r), ', ') INTO v_names
              FROM (SELECT jsonb_array_elements_text(coalesce(v_n, '[]')) EXCEPT
                    SELECT jsonb_array_elements_text(coalesce(v_o, '[]'))) AS added(r);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/required: %s became required (events already emitted may lack it)', p_path, v_names);
            END IF;
            SELECT string_agg(format('"%s"', r), ', ') INTO v_names
              FROM (SELECT jsonb_array_elements_text(coalesce(v_o, '[]')) EXCEPT
                    SELECT jsonb_array_elements_text(coalesce(v_n, '[]'))) AS removed(r);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/required: %s is no longer required (consumers rely on it)', p_path, v_names);
            END IF;
        ELSIF v_key = 'properties' THEN
            FOR v_names, v_o IN SELECT e.key, e.value FROM jsonb_each(coalesce(v_old -> 'properties', '{}')) AS e LOOP
                IF NOT coalesce(v_new -> 'properties' ? v_names, false) THEN
                    RETURN format('%s/properties/%s: property removed', p_path, v_names);
                END IF;
                v_err := whk.jsonschema_breaking_change(
                    v_o, v_new -> 'properties' -> v_names,
                    p_path || '/properties/' || replace(replace(v_names, '~', '~0'), '/', '~1'));
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
            IF v_old -> 'additionalProperties' = 'false'::jsonb THEN
                SELECT string_agg(format('"%s"', k), ', ') INTO v_names
                  FROM jsonb_object_keys(coalesce(v_new -> 'properties', '{}')) AS k
                 WHERE NOT coalesce(v_old -> 'properties' ? k, false);
                IF v_names IS NOT NULL THEN
                    RETURN format('%s/properties: %s added to an object that had additionalProperties: false',
                                  p_path, v_names);
                END IF;
            END IF;
        ELSIF v_key = 'additionalProperties' THEN
            IF v_n = 'false'::jsonb THEN
                RETURN format('%s/additionalProperties: became false', p_path);
            ELSIF v_n IS NOT NULL AND v_n <> 'true'::jsonb THEN
                v_err := whk.jsonschema_breaking_change(coalesce(v_o, '{}'), v_n, p_path || '/additionalProperties');
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END IF;
        ELSIF v_key = 'enum' THEN
            IF v_n IS NULL THEN
                CONTINUE;  -- any value now: looser
            END IF;
            IF v_o IS NULL THEN
                RETURN format('%s/enum: added (values allowed before are now refused)', p_path);
            END IF;
            SELECT string_agg(e.value::text, ', ') INTO v_names
              FROM jsonb_array_elements(v_o) AS e
             WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_n) AS f WHERE f.value = e.value);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/enum: %s removed', p_path, v_names);
            END IF;
        ELSIF v_key IN ('const', 'pattern', 'multipleOf') THEN
            IF v_n IS NOT NULL THEN
                RETURN format('%s/%s: %s', p_path, v_key, CASE WHEN v_o IS NULL THEN 'added' ELSE 'changed' END);
            END IF;
        ELSIF v_key = ANY (c_lower) THEN
            IF v_n IS NOT NULL AND (v_o IS NULL OR v_n::numeric > v_o::numeric) THEN
                RETURN format('%s/%s: tightened from %s to %s', p_path, v_key, coalesce(v_o::text, 'none'), v_n::text);
            END IF;
        ELSIF v_key = ANY (c_upper) THEN
            IF v_n IS NOT NULL AND (v_o IS NULL OR v_n::numeric < v_o::numeric) THEN
                RETURN format('%s/%s: tightened from %s to %s', p_path, v_key, coalesce(v_o::text, 'none'), v_n::text);
            END IF;
        ELSIF v_key = 'uniqueItems' THEN
            IF v_n = 'true'::jsonb THEN
                RETURN format('%s/uniqueItems: added', p_path);
            END IF;
        ELSIF v_key = 'items' THEN
            IF v_n IS NOT NULL THEN
                v_err := whk.jsonschema_breaking_change(coalesce(v_o, '{}'), v_n, p_path || '/items');
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END IF;
        ELSIF v_key IN ('$defs', 'definitions') THEN
            FOR v_names, v_o IN SELECT e.key, e.value FROM jsonb_each(coalesce(v_old -> v_key, '{}')) AS e LOOP
                IF NOT coalesce(v_new -> v_key ? v_names, false) THEN
                    RETURN format('%s/%s/%s: definition removed', p_path, v_key, v_names);
                END IF;
                v_err := whk.jsonschema_breaking_change(v_o, v_new -> v_key -> v_names,
                                                        p_path || '/' || v_key || '/' || v_names);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key = 'format' THEN
            IF v_n IS NOT NULL THEN
                RETURN format('%s/format: %s', p_path, CASE WHEN v_o IS NULL THEN 'added' ELSE 'changed' END);
            END IF;
        ELSE
            -- allOf/anyOf/oneOf/not/if/then/else/$ref/prefixItems: compatibility cannot be proven here.
            RETURN format('%s/%s: changed (compatibility of %s cannot be checked: publish a new major)',
                          p_path, v_key, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_breaking_change(jsonb, jsonb, text) IS
    'NULL when a new schema is backward compatible with the old one (minor bump), else the first breaking change.';
