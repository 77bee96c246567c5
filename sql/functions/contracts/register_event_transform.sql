-- whk.register_event_transform: bridge two majors of an event type with an SQL function, so a webhook
-- pinned to one major (payload_version) still receives events published in another, rendered
-- (docs/capture.md, "Versions and transforms"). Chains are followed (3 -> 2 -> 1): register one step per
-- pair of neighbouring majors, in the directions subscribers need.
--
-- The function takes the event's `data` (jsonb) and returns the data in to_major's shape; it must be
-- IMMUTABLE or STABLE (a pure function of the data: the dispatcher runs it inside its routing statement,
-- with the dispatcher's role) and executable by whk_dispatcher. from_major / to_major may name a published
-- major or the next one, so a bridge can exist before the major it comes from is published (then
-- whk.register_event_type(..., new_major => true) finds no pinned webhook left without one).
--
-- Registering the same pair again replaces the function. Either way, deliveries of this type parked for a
-- missing or failing transform are rendered again at once (whk.render_parked_deliveries): returns how
-- many left the parking lot. SQL only: choosing code that runs in the dispatcher is a DBA's act.
CREATE OR REPLACE FUNCTION whk.register_event_transform(event_type text, from_major integer, to_major integer,
                                                        "function" text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type  text    := register_event_transform.event_type;
    p_from  integer := register_event_transform.from_major;
    p_to    integer := register_event_transform.to_major;
    p_fn    text    := register_event_transform."function";
    v_type  whk.whk_02_eventos%ROWTYPE;
    v_oid   regprocedure;
    v_proc  pg_catalog.pg_proc%ROWTYPE;
    v_nsp   text;
    v_name  text;
    v_major integer;
BEGIN
    SELECT * INTO v_type FROM whk.whk_02_eventos e WHERE e.name = p_type FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'transforms bridge the majors of a registered type: SELECT name, current_major FROM whk.whk_02_eventos';
    END IF;
    FOREACH v_major IN ARRAY ARRAY[p_from, p_to] LOOP
        IF v_major IS NULL OR v_major < 1 OR v_major > v_type.current_major + 1 THEN
            RAISE EXCEPTION 'major % of % is neither published nor the next one', coalesce(v_major::text, 'NULL'), p_type
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('from_major and to_major are between 1 and %s (%s is at %s.%s; %s is the next major)',
                                    v_type.current_major + 1, p_type, v_type.current_major, v_type.current_minor,
                                    v_type.current_major + 1);
        END IF;
    END LOOP;
    IF p_from = p_to THEN
        RAISE EXCEPTION 'a transform joins two different majors, got % and %', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a webhook pinned to the event''s own major needs no transform';
    END IF;

    BEGIN
        v_oid := CASE WHEN p_fn LIKE '%(%' THEN to_regprocedure(p_fn) ELSE to_regproc(p_fn)::oid::regprocedure END;
    EXCEPTION WHEN OTHERS THEN
        v_oid := NULL;  -- not a function name at all (e.g. unbalanced parentheses): the same answer
    END;
    IF v_oid IS NULL THEN
        RAISE EXCEPTION 'no function %', coalesce(quote_literal(p_fn), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'create it first, e.g. CREATE FUNCTION erp.order_v2_to_v1(data jsonb) RETURNS jsonb '
                         'LANGUAGE sql IMMUTABLE RETURN data - ''currency''; and pass ''erp.order_v2_to_v1'' '
                         '(schema-qualified; with several overloads, ''erp.order_v2_to_v1(jsonb)'')';
    END IF;
    SELECT * INTO v_proc FROM pg_catalog.pg_proc p WHERE p.oid = v_oid;
    SELECT n.nspname INTO v_nsp FROM pg_catalog.pg_namespace n WHERE n.oid = v_proc.pronamespace;
    IF v_proc.prokind <> 'f' OR v_proc.proretset OR v_proc.pronargs <> 1
       OR v_proc.proargtypes[0] <> 'jsonb'::regtype OR v_proc.prorettype <> 'jsonb'::regtype THEN
        RAISE EXCEPTION 'function % is not (jsonb) RETURNS jsonb', v_oid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a transform takes the event''s data and returns it in the other major''s shape: '
                         '(data jsonb) RETURNS jsonb, one argument, no SETOF';
    END IF;
    IF v_proc.provolatile = 'v' THEN
        RAISE EXCEPTION 'function % is VOLATILE', v_oid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('a transform is a pure function of the data, run inside the dispatcher''s routing: '
                                'ALTER FUNCTION %s IMMUTABLE (or STABLE)', v_oid);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'whk_dispatcher')
       AND NOT (has_function_privilege('whk_dispatcher', v_oid, 'EXECUTE')
                AND has_schema_privilege('whk_dispatcher', v_proc.pronamespace, 'USAGE')) THEN
        RAISE EXCEPTION 'whk_dispatcher may not call function %', v_oid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('the dispatcher renders events: GRANT USAGE ON SCHEMA %I TO whk_dispatcher; '
                                'GRANT EXECUTE ON FUNCTION %s TO whk_dispatcher', v_nsp, v_oid);
    END IF;
    v_name := format('%I.%I', v_nsp, v_proc.proname);

    INSERT INTO whk.whk_02_eventos_transforms AS t (event_type_id, from_major, to_major, function)
    VALUES (v_type.id, p_from, p_to, v_name)
    ON CONFLICT (event_type_id, from_major, to_major)
    DO UPDATE SET function = excluded.function, updated_at = now();
    RETURN whk.render_parked_deliveries(p_type);
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.register_event_transform(text, integer, integer, text) FROM PUBLIC;
COMMENT ON FUNCTION whk.register_event_transform(text, integer, integer, text) IS
    'Bridge two majors of an event type with a (data jsonb) RETURNS jsonb function; re-renders parked deliveries.';
