-- whk.register_event_type: add an event type to the catalog or publish a new schema version of it.
-- A new type starts at 1.0. For an existing type the schema is compared with the latest version of its
-- current major: identical = nothing new; backward compatible = next minor (1.0 -> 1.1); breaking =
-- refused unless new_major, which publishes (major + 1).0. Returns the resulting version 'major.minor'.
-- description / strict / category: NULL keeps what the type has (new types: '', false, the prefix).
--
-- A new major is refused while a webhook subscribed to the type is pinned to another major
-- (payload_version) that no chain of transforms reaches from the new one (whk.event_transform_path): the
-- error lists them, so publishing never silently strands a subscriber. force => true publishes anyway;
-- their deliveries are then parked by the router with the missing transform as the reason, and released
-- when it is registered (whk.register_event_transform). Disabled webhooks count (they may be resumed);
-- deleted ones do not.
--
-- The signature gained `force`: the old one is dropped so a database built before it keeps no ambiguous
-- overload.
DROP FUNCTION IF EXISTS whk.register_event_type(text, jsonb, text, boolean, boolean, text, text);
CREATE OR REPLACE FUNCTION whk.register_event_type(
    event_type  text,
    schema      jsonb,
    description text DEFAULT NULL,
    strict      boolean DEFAULT NULL,
    new_major   boolean DEFAULT false,
    category    text DEFAULT NULL,
    changelog   text DEFAULT NULL,
    force       boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- Parameters keep the public names (named notation: new_major => true); the body uses these copies.
    p_event_type  text    := register_event_type.event_type;
    p_schema      jsonb   := register_event_type.schema;
    p_description text    := register_event_type.description;
    p_strict      boolean := register_event_type.strict;
    p_new_major   boolean := coalesce(register_event_type.new_major, false);
    p_category    text    := register_event_type.category;
    p_changelog   text    := register_event_type.changelog;
    p_force       boolean := coalesce(register_event_type.force, false);
    v_type    whk.whk_02_eventos%ROWTYPE;
    v_latest  jsonb;
    v_problem text;
    v_break   text;
    v_major   integer;
    v_minor   integer;
    v_pinned  text;
BEGIN
    IF p_event_type IS NULL OR p_event_type !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        RAISE EXCEPTION 'invalid event type name %', coalesce(quote_literal(p_event_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use lowercase dotted names such as ''invoice.paid'' (letters, digits, _; at least one dot)';
    END IF;
    v_problem := whk.jsonschema_problem(p_schema);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'schema of % is not usable: %', p_event_type, v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'schemas are JSON Schema (draft 2020-12) objects using the subset listed in docs/capture.md';
    END IF;
    IF jsonb_typeof(p_schema) = 'boolean' THEN
        p_schema := CASE WHEN p_schema = 'true'::jsonb THEN '{}'::jsonb ELSE '{"not": {}}'::jsonb END;
    END IF;

    -- Concurrent registrations of one type serialise on its catalog row.
    INSERT INTO whk.whk_02_eventos (name, description, category, strict, current_major, current_minor)
    VALUES (p_event_type, coalesce(p_description, ''), coalesce(p_category, split_part(p_event_type, '.', 1)),
            coalesce(p_strict, false), 1, 0)
    ON CONFLICT (name) DO NOTHING;
    IF FOUND THEN
        SELECT * INTO v_type FROM whk.whk_02_eventos WHERE name = p_event_type;
        INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
        VALUES (v_type.id, 1, 0, p_schema, coalesce(p_changelog, 'initial version'));
        RETURN '1.0';
    END IF;

    SELECT * INTO v_type FROM whk.whk_02_eventos WHERE name = p_event_type FOR UPDATE;
    SELECT v.schema INTO v_latest
      FROM whk.whk_02_eventos_versoes v
     WHERE v.event_type_id = v_type.id AND v.major = v_type.current_major AND v.minor = v_type.current_minor;

    v_major := v_type.current_major;
    v_minor := v_type.current_minor;
    IF p_new_major THEN
        v_major := v_major + 1;
        v_minor := 0;
        SELECT string_agg(format('%s %L (pinned to v%s)', w.id, w.name, w.payload_version), ', ' ORDER BY w.id)
          INTO v_pinned
          FROM whk.whk_01_webhooks w
         WHERE w.deleted_at IS NULL AND w.payload_version IS NOT NULL AND w.payload_version <> v_major
           AND whk.event_type_matches(w.event_types, p_event_type)
           AND whk.event_transform_path(p_event_type, v_major, w.payload_version) IS NULL;
        IF v_pinned IS NOT NULL AND NOT p_force THEN
            RAISE EXCEPTION 'publishing % version %.0 would strand webhooks pinned to another major: %',
                            p_event_type, v_major, v_pinned
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'no chain of transforms renders version ' || v_major || ' for these webhooks',
                      HINT = format('register a transform first, e.g. SELECT whk.register_event_transform(%L, %s, %s, '
                                    '''<schema>.<function>''), or re-pin the webhooks; force => true publishes '
                                    'anyway and parks their deliveries until a transform exists',
                                    p_event_type, v_major, v_major - 1);
        END IF;
    ELSIF v_latest IS DISTINCT FROM p_schema THEN
        v_break := whk.jsonschema_breaking_change(v_latest, p_schema);
        IF v_break IS NOT NULL THEN
            RAISE EXCEPTION 'breaking schema change for % in major version %: %', p_event_type, v_major, v_break
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'within a major version a schema may only change in backward compatible ways '
                               '(new optional properties, new enum values, looser bounds)',
                      HINT = format('keep version %s.%s compatible, or publish version %s.0 with '
                                    'SELECT whk.register_event_type(%L, <schema>, new_major => true)',
                                    v_major, v_minor, v_major + 1, p_event_type);
        END IF;
        v_minor := v_minor + 1;
    END IF;

    IF (v_major, v_minor) <> (v_type.current_major, v_type.current_minor) THEN
        INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
        VALUES (v_type.id, v_major, v_minor, p_schema,
                coalesce(p_changelog, CASE WHEN v_minor = 0 THEN 'breaking change' ELSE 'backward compatible change' END));
    END IF;
    UPDATE whk.whk_02_eventos
       SET current_major = v_major,
           current_minor = v_minor,
           description = coalesce(p_description, description),
           strict = coalesce(p_strict, strict),
           category = coalesce(p_category, category),
           updated_at = now()
     WHERE id = v_type.id;

    IF v_major <> v_type.current_major THEN
        -- Capture triggers carry the major of their types baked in: regenerate the affected ones.
        PERFORM whk.capture_install(c.tbl)
           FROM whk.capture_config c
          WHERE p_event_type IN (c.event_prefix || '.created', c.event_prefix || '.updated', c.event_prefix || '.deleted');
    END IF;
    RETURN v_major || '.' || v_minor;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text, boolean) FROM PUBLIC;
-- The API registers event types (POST /api/whk/event-types).
GRANT EXECUTE ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text, boolean) TO whk_app;
COMMENT ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text, boolean) IS
    'Register an event type or a new schema version: compatible = minor bump, breaking = refused unless new_major; a new major stranding pinned webhooks = refused unless force.';
