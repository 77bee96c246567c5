-- whk.validate_payload: check an event body (the envelope built by whk.event_envelope) against the
-- schema of its type and major version. NULL = valid, else '<JSON pointer>: <what is wrong>'.
-- The router calls it for non-strict types and stores the answer in outbox.valid / validation_error;
-- whk.emit calls it for strict types on the row it just wrote (an invalid one raises, undoing the row). version NULL = the type's current major;
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
