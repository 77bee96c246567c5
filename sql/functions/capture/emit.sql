-- whk.emit: a custom event from any module, written to the outbox in the caller's transaction
-- (rollback = no event). payload is the event's `data`, stored as outbox.data; the delivered body is the
-- Standard Webhooks envelope {"type", "timestamp", "data"} built by whk.event_envelope (timestamp = the
-- transaction's time). The returned uuid becomes the `webhook-id` header.
-- Strict types are validated here, on the envelope of the row just written, exactly as it will be
-- delivered (an invalid payload raises, with a hint, and the raise undoes the row); others are validated
-- by the router, which flags invalid events (outbox.valid / validation_error) instead of dropping them.
-- deliver_at delays delivery (NULL = now). key orders events per entity for ordered webhooks.
CREATE OR REPLACE FUNCTION whk.emit(event_type text, payload jsonb, key text DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type     text := emit.event_type;
    v_major    integer;
    v_minor    integer;
    v_strict   boolean;
    v_id       uuid := gen_random_uuid();
    v_envelope jsonb;
    v_error    text;
BEGIN
    SELECT e.current_major, e.current_minor, e.strict INTO v_major, v_minor, v_strict
      FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'register it first: SELECT whk.register_event_type(''' || coalesce(p_type, 'module.thing_happened')
                         || ''', ''{"type": "object"}'', ''what it means'')';
    END IF;
    INSERT INTO whk.outbox AS o (event_id, event_type, event_version, event_key, data, operation, deliver_at, valid)
    VALUES (v_id, p_type, v_major, emit.key, coalesce(emit.payload, '{}'::jsonb), 'EMIT', emit.deliver_at,
            CASE WHEN v_strict THEN true END)
    RETURNING CASE WHEN v_strict THEN whk.event_envelope(o) END INTO v_envelope;
    IF v_strict THEN
        v_error := whk.validate_payload(p_type, v_major, v_envelope);
        IF v_error IS NOT NULL THEN
            RAISE EXCEPTION 'invalid payload for strict event type % (version %.%): %', p_type, v_major, v_minor, v_error
                USING ERRCODE = 'check_violation',
                      DETAIL = v_error,
                      HINT = format('make the payload match the schema (SELECT schema FROM whk.whk_02_eventos_versoes v '
                                    'JOIN whk.whk_02_eventos e ON e.id = v.event_type_id WHERE e.name = %L '
                                    'ORDER BY major DESC, minor DESC LIMIT 1), or publish a compatible schema '
                                    'with whk.register_event_type', p_type);
        END IF;
    END IF;
    -- The wake-up of whk.wake_dispatchers, not a call to it (migration 0020): a PERFORM is a query of its own,
    -- ~9 us per event; the test itself is inlined by the planner.
    IF whk.dispatcher_is_idle() THEN
        PERFORM pg_notify('whk_outbox', '');
    END IF;
    RETURN v_id;
END;
$$;
GRANT EXECUTE ON FUNCTION whk.emit(text, jsonb, text, timestamptz) TO PUBLIC;
COMMENT ON FUNCTION whk.emit(text, jsonb, text, timestamptz) IS
    'Emit a custom event in the caller''s transaction; returns its id (the webhook-id). Strict types are validated.';
