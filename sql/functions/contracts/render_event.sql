-- whk.render_event: the body a webhook pinned to p_to_major receives for an event of p_from_major: the
-- envelope with its data passed through the chain of transforms (whk.event_transform_path) and a
-- "version" member naming the major it now has. `type` and `timestamp` are kept: a transform renders the
-- data only. p_to_major NULL (an unpinned webhook): (NULL, NULL), the event's own envelope is sent.
--
-- Fault isolation: this never raises for a missing chain or a transform's error. It returns the reason
-- in `problem` (body NULL) and the router parks that one delivery with it; every other delivery of the
-- routing statement goes on. Each transform runs in its own subtransaction (the EXCEPTION block), which
-- costs an XID only if the transform writes. A transform that never returns holds routing up like any
-- slow statement: transforms must be cheap, pure functions of the data.
-- The function is called by name from pg_proc, never by the stored text, so nothing in the table can
-- change the statement that runs.
CREATE OR REPLACE FUNCTION whk.render_event(p_envelope jsonb, p_event_type text, p_from_major integer,
                                            p_to_major integer, OUT body jsonb, OUT problem text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_path text[];
    v_fn   text;
    v_call text;
    v_data jsonb := p_envelope -> 'data';
BEGIN
    IF p_to_major IS NULL OR p_envelope IS NULL THEN
        RETURN;
    END IF;
    IF p_from_major IS DISTINCT FROM p_to_major THEN
        v_path := whk.event_transform_path(p_event_type, p_from_major, p_to_major);
        IF v_path IS NULL THEN
            problem := format('no transform from %s v%s to v%s (the webhook''s pinned major): register one with '
                              'SELECT whk.register_event_transform(%L, %s, %s, ''<schema>.<function>'')',
                              p_event_type, p_from_major, p_to_major, p_event_type, p_from_major, p_to_major);
            RETURN;
        END IF;
        FOREACH v_fn IN ARRAY v_path LOOP
            BEGIN
                SELECT format('%I.%I($1)', n.nspname, p.proname) INTO STRICT v_call
                FROM pg_catalog.pg_proc p
                JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE p.oid = to_regprocedure(v_fn || '(jsonb)');
                EXECUTE 'SELECT ' || v_call INTO v_data USING v_data;
            EXCEPTION WHEN OTHERS THEN
                problem := left(format('transform %s(jsonb) of %s failed (%s): %s', v_fn, p_event_type, SQLSTATE,
                                       CASE WHEN SQLSTATE = 'P0002' THEN 'the function no longer exists'
                                            ELSE SQLERRM END), 2000);
                RETURN;
            END;
            IF v_data IS NULL THEN
                problem := format('transform %s(jsonb) of %s returned NULL', v_fn, p_event_type);
                RETURN;
            END IF;
        END LOOP;
    END IF;
    body := jsonb_set(p_envelope, '{data}', v_data) || jsonb_build_object('version', p_to_major);
END;
$$;
COMMENT ON FUNCTION whk.render_event(jsonb, text, integer, integer) IS
    'Envelope rendered to a pinned major (data through the transforms, plus "version"), or the problem why not.';
