-- whk.partition_work: why a partition of a time-partitioned table cannot be dropped yet, or NULL when
-- nothing needs it.
-- whk.outbox: an event still pending (not routed; outbox_pending_idx), one that failed its schema check
-- (valid = false, when p_keep_invalid; read by a scan of the partition), or an unfinished delivery of one
-- of its events (whk.delivery_queue, filtered on event_created_at). The claim rebuilds a delivery's body
-- from its outbox row (whk.event_envelope), so a partition is needed while any of them may still be sent;
-- dead letters do not hold it: each keeps its own copy (the trigger whk.dead_letter_body).
-- The delivery history: nothing needs it (finished deliveries only; dead letters are live rows).
-- The attempt log: an attempt of a delivery that is unfinished or dead: the attempts are what an operator
-- reads before retrying a dead letter. Attempt ids grow with time, so only deliveries (through their
-- partial status indexes) listing an attempt id within the partition's id range are probed in the
-- partition's primary key; dead letters are looked for first, and the first hit ends the search.
-- (Attempt ids are drawn at the flush: a partition's range may overlap its neighbours' a little, and the
-- probe settles it.) An attempt whose outcome was not applied (the lease had passed to another
-- dispatcher) is logged without being listed in its delivery's attempt_ids: it does not keep a day.
CREATE OR REPLACE FUNCTION whk.partition_work(p_table regclass, p_part regclass, p_from timestamptz,
                                              p_to timestamptz, p_keep_invalid boolean)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_why   text;
    v_lo    bigint;
    v_hi    bigint;
    v_state text;
    v_found boolean;
BEGIN
    IF p_table = 'whk.delivery_history'::regclass THEN
        RETURN NULL;
    END IF;
    IF p_table = 'whk.whk_03_entregas_tentativas'::regclass THEN
        EXECUTE format('SELECT min(id), max(id) FROM %s', p_part) INTO v_lo, v_hi;
        IF v_lo IS NULL THEN
            RETURN NULL;
        END IF;
        -- Status tests spelled out as equalities, one per partial status index (a bitmap OR of them).
        FOREACH v_state IN ARRAY ARRAY['d.status = ''dead''',
                                       'd.status = ''pending'' OR d.status = ''in_flight'''
                                       ' OR d.status = ''awaiting_ack'' OR d.status = ''parked'''] LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM whk.delivery_queue d WHERE (%s)'
                           '   AND EXISTS (SELECT 1 FROM unnest(d.attempt_ids) x WHERE x BETWEEN $1 AND $2)'
                           '   AND EXISTS (SELECT 1 FROM %s a WHERE a.id = ANY (d.attempt_ids)))', v_state, p_part)
               INTO v_found USING v_lo, v_hi;
            IF v_found THEN
                RETURN CASE WHEN v_state LIKE '%dead%' THEN 'attempts of dead-lettered deliveries'
                            ELSE 'attempts of unfinished deliveries' END;
            END IF;
        END LOOP;
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %1$s WHERE status = ''pending'') THEN ''pending events'''
                   '            WHEN $1 AND EXISTS (SELECT 1 FROM %1$s WHERE valid IS FALSE) THEN ''invalid events'' END',
                   p_part)
       INTO v_why USING p_keep_invalid;
    IF v_why IS NULL THEN
        SELECT 'unfinished deliveries'
          INTO v_why
          FROM whk.delivery_queue d
         WHERE d.status IN ('pending', 'in_flight', 'awaiting_ack', 'parked')
           AND d.event_created_at >= p_from AND d.event_created_at < p_to
         LIMIT 1;
    END IF;
    RETURN v_why;
END;
$$;
COMMENT ON FUNCTION whk.partition_work(regclass, regclass, timestamptz, timestamptz, boolean) IS
    'Why a partition is still needed (outbox: pending/invalid events, unfinished deliveries; attempts: unfinished or dead deliveries), or NULL.';
