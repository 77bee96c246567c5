-- whk.wake_dispatchers: the conditional, coalesced wake-up every outbox writer performs once per statement.
-- NOTIFY only while a live dispatcher has declared itself idle (whk.dispatcher_set_idle): NOTIFY takes a
-- cluster-wide lock at commit, so doing it on every commit serialises the ERP's commits. The payload is
-- constant, so all wake-ups of one transaction fold into a single notification at commit.
-- "Idle" is read from whk.dispatcher_idle_until (kept by the trigger whk.dispatchers_idle_refresh): a
-- live dispatcher is idle and its heartbeat is less than 60 s old (the test: whk.dispatcher_is_idle).
-- No SET clause (migration 0020): every name is schema-qualified, so the caller's search_path cannot
-- redirect one, and a SET clause cost each call ~10 us (measured through whk.emit: 110 -> 100 us per call).
CREATE OR REPLACE FUNCTION whk.wake_dispatchers()
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
BEGIN
    IF whk.dispatcher_is_idle() THEN
        PERFORM pg_catalog.pg_notify('whk_outbox', '');
        RETURN true;
    END IF;
    RETURN false;
END;
$$;
COMMENT ON FUNCTION whk.wake_dispatchers() IS
    'NOTIFY whk_outbox if (and only if) a live dispatcher is idle; identical notifications fold per transaction.';
