-- whk.dispatcher_set_idle: a dispatcher declares that it is about to sleep (idle) or busy again.
-- Capture triggers and whk.emit NOTIFY channel 'whk_outbox' only while some live dispatcher is idle, so
-- busy periods cost the ERP no NOTIFY at all (NOTIFY serialises commits cluster-wide). Protocol: LISTEN
-- first, set idle, then re-check the outbox before sleeping (a row committed in between is seen by that
-- check; polling every WHK_POLL_INTERVAL is the backstop). Returns false when no such dispatcher is
-- registered in whk.dispatchers. Also refreshes heartbeat_at: idle dispatchers whose heartbeat is older
-- than 60 s no longer count as idle (a crashed idle dispatcher must not make every commit notify).
CREATE OR REPLACE FUNCTION whk.dispatcher_set_idle(id text, idle boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    UPDATE whk.dispatchers AS d
       SET idle = dispatcher_set_idle.idle,
           heartbeat_at = now()
     WHERE d.id = dispatcher_set_idle.id;
    RETURN FOUND;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.dispatcher_set_idle(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.dispatcher_set_idle(text, boolean) TO whk_dispatcher;
COMMENT ON FUNCTION whk.dispatcher_set_idle(text, boolean) IS
    'Declare a dispatcher idle (capture then NOTIFYs whk_outbox) or busy (no NOTIFY); false = unknown dispatcher.';
