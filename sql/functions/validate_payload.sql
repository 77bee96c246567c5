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

    SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RETURN format('/type: unknown event type "%s"', p_type);
    END IF;
    SELECT v.schema INTO v_schema
      FROM whk.whk_02_eventos_versoes v
      JOIN whk.whk_02_eventos e ON e.id = v.event_type_id
     WHERE e.name = p_type AND v.major = coalesce(p_version, v_major)
     ORDER BY v.minor DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN format('/type: "%s" has no version %s', p_type, coalesce(p_version, v_major));
    END IF;
    RETURN whk.jsonschema_error(v_schema, payload -> 'data', '/data');
END;
$$;
COMMENT ON FUNCTION whk.validate_payload(text, integer, jsonb) IS
    'NULL when an event envelope matches the schema of its type/major, else the first error (JSON pointer: message).';
