-- Cache of "some live dispatcher is idle until <epoch second>": max(heartbeat_at) + 60 s over idle rows of
-- whk.dispatchers, 0 when none. Kept by the trigger whk.dispatchers_idle_refresh (sql/triggers) on every
-- change of whk.dispatchers. Why a sequence: capture triggers read it with pg_sequence_last_value() as a
-- plain function call (~1 us) instead of running a query on every ERP statement (~15 us measured).
CREATE SEQUENCE whk.dispatcher_idle_until AS bigint MINVALUE 0 START WITH 0;
COMMENT ON SEQUENCE whk.dispatcher_idle_until IS
    'Epoch second until which some dispatcher counts as idle (capture NOTIFYs only before it); see docs/capture.md.';
