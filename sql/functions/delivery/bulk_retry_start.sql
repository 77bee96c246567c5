-- whk.bulk_retry_start: record a bulk retry of the deliveries matching the filters and queue its job
-- (pgqueuer entrypoint `bulk_retry`, run by the job worker). total is counted now with the same
-- definition the batches use (whk.bulk_retry_candidates); a matching delivery that dies later is retried
-- too if the keyset has not passed it. SECURITY DEFINER only to queue the job: the callers' roles have no
-- rights on pgqueuer's table. Tenancy is the caller's business (the API passes the caller's consumer and
-- checks the webhook is its own). Returns the bulk retry's id.
CREATE OR REPLACE FUNCTION whk.bulk_retry_start(p_consumer_id bigint, p_webhook_id bigint, p_event_type text,
                                                p_statuses text[], p_created_from timestamptz,
                                                p_created_to timestamptz, p_created_by text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_created_from >= p_created_to THEN
        RAISE EXCEPTION 'empty created range [%, %)', p_created_from, p_created_to
            USING ERRCODE = 'invalid_parameter_value', HINT = 'created_from must be before created_to';
    END IF;
    IF p_statuses IS NULL OR cardinality(p_statuses) NOT BETWEEN 1 AND 6
       OR NOT p_statuses <@ ARRAY['pending', 'awaiting_ack', 'delivered', 'dead', 'parked', 'cancelled'] THEN
        RAISE EXCEPTION 'bad statuses %', p_statuses
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '1 to 6 of pending, awaiting_ack, delivered, dead, parked, cancelled';
    END IF;
    INSERT INTO whk.bulk_retries (consumer_id, webhook_id, event_type, statuses, created_from, created_to,
                                  created_by)
    VALUES (p_consumer_id, p_webhook_id, p_event_type, p_statuses, p_created_from, p_created_to, p_created_by)
    RETURNING id INTO v_id;
    UPDATE whk.bulk_retries
       SET total = (SELECT count(*) FROM whk.bulk_retry_candidates(v_id, NULL, NULL))
     WHERE id = v_id;
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status)
    VALUES (0, 'bulk_retry', convert_to(v_id::text, 'UTF8'), 'queued');
    RETURN v_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.bulk_retry_start(bigint, bigint, text, text[], timestamptz, timestamptz, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.bulk_retry_start(bigint, bigint, text, text[], timestamptz, timestamptz, text)
    TO whk_app, whk_dispatcher;
COMMENT ON FUNCTION whk.bulk_retry_start(bigint, bigint, text, text[], timestamptz, timestamptz, text) IS
    'Record a bulk retry of the deliveries matching the filters and queue its job; returns its id.';
