-- A dispatcher announces itself and proves it is alive (every few seconds). Rows of dispatchers silent
-- for longer than p_forget_after_s are removed: their deliveries are reclaimed by lease expiry anyway,
-- and a stale idle flag would make capture triggers NOTIFY for nobody.
--
-- p_ssrf_policy / p_ssrf_exempt: the SSRF policy this process enforces (a fingerprint and the exempt CIDRs,
-- WHK_ALLOW_PRIVATE_CIDRS). Every dispatcher of a deployment must agree, or which process claims a
-- delivery decides whether it may reach a private address; /api/whk/monitoring/health compares them.
-- p_last_error: why the dispatcher's rounds are failing right now (an error not about one webhook, which
-- it cannot quarantine away), NULL while they succeed; last_error_at keeps when that error first appeared.
CREATE OR REPLACE FUNCTION whk.dispatcher_heartbeat(p_id text, p_hostname text, p_pid integer, p_version text,
                                                    p_stopping boolean, p_forget_after_s double precision,
                                                    p_ssrf_policy text DEFAULT NULL,
                                                    p_ssrf_exempt text[] DEFAULT NULL,
                                                    p_last_error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    INSERT INTO whk.dispatchers AS x (id, hostname, pid, version, stopping, ssrf_policy, ssrf_exempt, last_error,
                                      last_error_at)
    VALUES (p_id, p_hostname, p_pid, p_version, p_stopping, p_ssrf_policy, p_ssrf_exempt, left(p_last_error, 2000),
            CASE WHEN p_last_error IS NOT NULL THEN now() END)
    ON CONFLICT (id) DO UPDATE
    SET heartbeat_at = now(), stopping = excluded.stopping, hostname = excluded.hostname, pid = excluded.pid,
        version = excluded.version, ssrf_policy = excluded.ssrf_policy, ssrf_exempt = excluded.ssrf_exempt,
        last_error = excluded.last_error,
        last_error_at = CASE WHEN excluded.last_error IS NULL THEN NULL
                             WHEN x.last_error IS NOT DISTINCT FROM excluded.last_error THEN x.last_error_at
                             ELSE now() END;

    DELETE FROM whk.dispatchers d
    WHERE d.id <> p_id AND d.heartbeat_at < now() - make_interval(secs => p_forget_after_s);
END;
$$;
