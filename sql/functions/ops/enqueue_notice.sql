-- Queue one alert notification job (pgqueuer entrypoint 'notify') in the caller's transaction. The API and
-- the worker reach pgqueuer's table only through this function (SECURITY DEFINER), so their roles need no
-- grant on it. A notice already queued or running under the same dedupe key is not queued twice (the
-- unique index's predicate is restated, as ON CONFLICT requires); returns the job id, or NULL then.
CREATE OR REPLACE FUNCTION whk.enqueue_notice(p_payload bytea, p_dedupe_key text)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
    VALUES (0, 'notify', p_payload, 'queued', p_dedupe_key)
    ON CONFLICT (dedupe_key) WHERE (status IN ('queued', 'picked') AND dedupe_key IS NOT NULL) DO NOTHING
    RETURNING id
$$;
