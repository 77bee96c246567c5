-- whk.dispatchers_idle_refresh: keep whk.dispatcher_idle_until equal to "max(heartbeat_at) + 60 s over idle
-- dispatchers" (0 when none) after every change of whk.dispatchers: whk.dispatcher_set_idle, the
-- dispatchers' own heartbeats and their removal all go through it, so capture triggers can test idleness
-- without a query. Refreshes are serialised by an advisory lock held to commit, so each one computes from
-- everything committed before it and the last committer's value stands. setval is not transactional: a
-- rolled back change can leave the cache stale until the next change (at worst a spurious NOTIFY, or a
-- missed one that the dispatcher's polling covers).
CREATE OR REPLACE FUNCTION whk.dispatchers_idle_refresh()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('whk.dispatcher_idle_until'));
    PERFORM setval('whk.dispatcher_idle_until',
                   coalesce((SELECT ceil(extract(epoch FROM max(d.heartbeat_at)))::bigint + 60
                               FROM whk.dispatchers d WHERE d.idle), 0));
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.dispatchers_idle_refresh() IS
    'Trigger: recompute whk.dispatcher_idle_until (idle dispatchers'' max heartbeat + 60 s) after dispatchers change.';

CREATE TRIGGER dispatchers_idle_refresh
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON whk.dispatchers
    FOR EACH STATEMENT EXECUTE FUNCTION whk.dispatchers_idle_refresh();
