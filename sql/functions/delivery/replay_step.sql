-- whk.replay_step: one batch of a replay (the job worker calls it until it returns false; a DBA can too).
-- The replay row is locked for the batch, so a cancel (whk.replay_cancel) waits for the running batch and
-- the next step sees it and stops. For each of the next p_batch events (whk.replay_events after the
-- keyset position): an event the webhook never had gets a new pending delivery, due now; an event it
-- already has keeps that delivery, re-queued through whk.retry_deliveries (same row, same event_id, so the
-- same webhook-id header: the receiver can deduplicate; one being attempted right now is left alone).
-- Returns true while there may be more to do.
CREATE OR REPLACE FUNCTION whk.replay_step(p_replay_id bigint, p_batch integer DEFAULT 1000)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    r           record;
    v_n         integer;
    v_last_at   timestamptz;
    v_last_id   bigint;
    v_existing  bigint[];
    v_created   integer;
    v_requeued  integer := 0;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 events per step';
    END IF;
    SELECT * INTO r FROM whk.replays WHERE id = p_replay_id FOR UPDATE;
    IF NOT FOUND OR r.state NOT IN ('queued', 'running') THEN
        RETURN false;
    END IF;
    -- A webhook deleted meanwhile is never claimed again: its new deliveries would wait forever (and keep
    -- their outbox partitions). The replay stops there, saying why.
    IF NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = r.webhook_id AND w.deleted_at IS NULL) THEN
        UPDATE whk.replays
           SET state = 'failed', error = 'the webhook was deleted', finished_at = clock_timestamp(),
               updated_at = clock_timestamp()
         WHERE id = p_replay_id;
        RETURN false;
    END IF;
    -- One step at a time per webhook, until commit: a pair is looked for below in the queue and the
    -- history, which no unique key spans, so two replays of the webhook's events (jobs run concurrently)
    -- would both create the pairs neither sees yet. Replays of other webhooks do not wait.
    PERFORM pg_advisory_xact_lock(hashtext('whk.replay_step'), hashtext(r.webhook_id::text));
    CREATE TEMP TABLE IF NOT EXISTS whk_replay_batch (
        outbox_id bigint, created_at timestamptz, event_id uuid, event_type text, commit_seq bigint,
        ordering_key text, payload jsonb, render_problem text
    ) ON COMMIT DROP;
    TRUNCATE whk_replay_batch;
    INSERT INTO whk_replay_batch
    SELECT * FROM whk.replay_events(r.webhook_id, r.since, r.until, r.event_types, r.predicate,
                                    r.cursor_created_at, r.cursor_id, p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    SELECT b.created_at, b.outbox_id INTO v_last_at, v_last_id
      FROM whk_replay_batch b ORDER BY b.created_at DESC, b.outbox_id DESC LIMIT 1;

    -- Existing pairs, live or finished (whk.whk_03_entregas: queue and history, by their outbox indexes),
    -- leave the batch, which keeps the events the webhook never had.
    WITH known AS (
        DELETE FROM whk_replay_batch b
         USING whk.whk_03_entregas d
         WHERE d.outbox_id = b.outbox_id AND d.event_created_at = b.created_at AND d.webhook_id = r.webhook_id
        RETURNING d.id
    )
    SELECT array_agg(k.id) INTO v_existing FROM known k;
    IF v_existing IS NOT NULL THEN
        v_requeued := whk.retry_deliveries(v_existing);
    END IF;
    INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
                                     ordering_key, commit_seq, next_attempt_at, status, payload, render_problem)
    -- A pinned webhook's body as routing renders it; one that cannot be rendered waits parked, as routed.
    SELECT b.event_id, b.outbox_id, b.created_at, b.event_type, w.id, w.consumer_id, b.ordering_key,
           b.commit_seq, clock_timestamp(), CASE WHEN b.render_problem IS NULL THEN 'pending' ELSE 'parked' END,
           b.payload, b.render_problem
      FROM whk_replay_batch b
      JOIN whk.whk_01_webhooks w ON w.id = r.webhook_id
     ORDER BY b.created_at, b.outbox_id;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    IF v_created > 0 THEN
        INSERT INTO whk.webhook_runtime (webhook_id) VALUES (r.webhook_id) ON CONFLICT (webhook_id) DO NOTHING;
    END IF;
    IF v_created + v_requeued > 0 THEN
        PERFORM whk.wake_dispatchers();
    END IF;

    UPDATE whk.replays
       SET done = done + v_n, created = created + v_created, requeued = requeued + v_requeued,
           -- Events routed after the count (late commits inside the range) are sent too.
           total = greatest(total, done + v_n),
           cursor_created_at = coalesce(v_last_at, cursor_created_at),
           cursor_id = coalesce(v_last_id, cursor_id),
           state = CASE WHEN v_n < p_batch THEN 'done' ELSE 'running' END,
           finished_at = CASE WHEN v_n < p_batch THEN clock_timestamp() END,
           updated_at = clock_timestamp()
     WHERE id = p_replay_id;
    RETURN v_n = p_batch;
END;
$$;
COMMENT ON FUNCTION whk.replay_step(bigint, integer) IS
    'One batch of a replay: new deliveries for new pairs, existing ones re-queued (same webhook-id).';
