-- whk.replay: the SQL control plane's replay, as `POST /webhooks/{id}/replay` and `whk replay` do it. Sends
-- the webhook's past events in [since, until) (still in outbox retention) again, each (event, webhook)
-- pair under its one webhook-id forever, through the replay job (whk.replay_start: the job worker works it
-- in batches; progress and cancel in whk.replays, whk.replay_cancel). event_types narrows the webhook's
-- own subscription (NULL or '{}' = all of it); predicate is a SQL/JSON path over the event envelope.
-- dry_run counts what would be sent and starts nothing (replay_id NULL). The actor recorded is the
-- database role (`sql:<role>`), as the SQL-side audit trail names it.
CREATE OR REPLACE FUNCTION whk.replay(webhook_id bigint, since timestamptz, until timestamptz DEFAULT now(),
                                     event_types text[] DEFAULT NULL, predicate jsonpath DEFAULT NULL,
                                     dry_run boolean DEFAULT false,
                                     OUT replay_id bigint, OUT total bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF dry_run THEN
        -- Same refusals as a real start (unknown webhook, empty range, past the retention horizon), then
        -- the count; the savepoint's rollback leaves no replay row and no job behind.
        BEGIN
            replay_id := whk.replay_start(replay.webhook_id, replay.since, replay.until, replay.event_types,
                                          replay.predicate, 'sql:' || session_user);
            SELECT r.total INTO total FROM whk.replays r WHERE r.id = replay_id;
            RAISE EXCEPTION USING ERRCODE = 'WHKRB';
        EXCEPTION
            WHEN SQLSTATE 'WHKRB' THEN
                replay_id := NULL;
        END;
        RETURN;
    END IF;
    replay_id := whk.replay_start(replay.webhook_id, replay.since, replay.until, replay.event_types,
                                  replay.predicate, 'sql:' || session_user);
    SELECT r.total INTO total FROM whk.replays r WHERE r.id = replay_id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.replay(bigint, timestamptz, timestamptz, text[], jsonpath, boolean) FROM PUBLIC;
COMMENT ON FUNCTION whk.replay(bigint, timestamptz, timestamptz, text[], jsonpath, boolean) IS
    'Replay a webhook''s past events in [since, until) through the replay job (one webhook-id per pair forever); dry_run counts only. Returns (replay_id, total).';
