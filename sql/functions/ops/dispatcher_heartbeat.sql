-- A dispatcher announces itself and proves it is alive (every few seconds). Rows of dispatchers silent
-- for longer than p_forget_after_s are removed: their deliveries are reclaimed by lease expiry anyway,
-- and a stale idle flag would make capture triggers NOTIFY for nobody.
CREATE OR REPLACE FUNCTION whk.dispatcher_heartbeat(p_id text, p_hostname text, p_pid integer, p_version text,
                                                    p_stopping boolean, p_forget_after_s double precision)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    INSERT INTO whk.dispatchers AS x (id, hostname, pid, version, stopping)
    VALUES (p_id, p_hostname, p_pid, p_version, p_stopping)
    ON CONFLICT (id) DO UPDATE
    SET heartbeat_at = now(), stopping = excluded.stopping, hostname = excluded.hostname, pid = excluded.pid,
        version = excluded.version;

    DELETE FROM whk.dispatchers d
    WHERE d.id <> p_id AND d.heartbeat_at < now() - make_interval(secs => p_forget_after_s);
END;
$$;
