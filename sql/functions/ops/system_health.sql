-- whk.system_health: a small snapshot of the capture side, used by system.health_check events.
CREATE OR REPLACE FUNCTION whk.system_health()
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT jsonb_build_object(
        'outbox_pending', (SELECT count(*) FROM whk.outbox WHERE status = 'pending'),
        'oldest_pending_s', (SELECT round(extract(epoch FROM now() - min(created_at))::numeric, 3)
                               FROM whk.outbox WHERE status = 'pending'),
        'dispatchers_live', (SELECT count(*) FROM whk.dispatchers
                              WHERE heartbeat_at > now() - interval '60 seconds' AND NOT stopping),
        'dispatchers_idle', (SELECT count(*) FROM whk.dispatchers
                              WHERE idle AND heartbeat_at > now() - interval '60 seconds'),
        'captured_tables', (SELECT count(*) FROM whk.capture_config));
$$;
COMMENT ON FUNCTION whk.system_health() IS 'Outbox backlog, live/idle dispatchers and captured tables as JSON.';
