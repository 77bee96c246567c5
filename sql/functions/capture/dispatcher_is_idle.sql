-- whk.dispatcher_is_idle: the wake-up's one test, "is a live dispatcher idle right now?", shared by every
-- writer that may NOTIFY (generated capture triggers, whk.emit, whk.wake_dispatchers).
-- The sequence whk.dispatcher_idle_until holds, in epoch seconds, the time until which some idle dispatcher
-- counts as live (kept by the trigger whk.dispatchers_idle_refresh; 0 = none idle). Reading it is a
-- function call, not a query. to_timestamp(deadline) > now() rather than deadline > date_part('epoch',
-- now()): date_part parses its unit text at every call (~2 us of every captured statement, measured).
-- SQL-standard body, no SET clause, not SECURITY DEFINER: the planner inlines it into the caller's
-- expression (checked by EXPLAIN VERBOSE in tests/db/test_capture_wakeup.py), so sharing it costs the ERP
-- statement nothing, and its names are bound when it is created (no search_path can redirect them). It
-- runs with the caller's rights: the callers are SECURITY DEFINER functions owned by the owner of whk.
CREATE OR REPLACE FUNCTION whk.dispatcher_is_idle()
RETURNS boolean
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT pg_catalog.to_timestamp(pg_catalog.pg_sequence_last_value('whk.dispatcher_idle_until'::pg_catalog.regclass)
                                   ::pg_catalog.float8) OPERATOR(pg_catalog.>) pg_catalog.now();
END;
REVOKE EXECUTE ON FUNCTION whk.dispatcher_is_idle() FROM PUBLIC;
COMMENT ON FUNCTION whk.dispatcher_is_idle() IS
    'Whether a live dispatcher is idle (whk.dispatcher_idle_until > now): the test before a wake-up NOTIFY.';
