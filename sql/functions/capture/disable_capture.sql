-- whk.disable_capture: stop capturing a table. Drops its three triggers and its generated functions (for an
-- aggregate root also its children's triggers and its flush) and
-- forgets its settings; events already in the outbox are kept and still delivered. The event types stay
-- in the catalog (their history and schemas remain). Returns false when the table was not captured.
CREATE OR REPLACE FUNCTION whk.disable_capture(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_tbl regclass := disable_capture.tbl;
    v_fn  text;
    v_agg text[];
    v_prefix text;
BEGIN
    DELETE FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl
    RETURNING cc.function_name, cc.aggregate, cc.event_prefix INTO v_fn, v_agg, v_prefix;
    IF v_fn IS NULL THEN
        RETURN false;
    END IF;
    IF v_agg IS NOT NULL THEN
        -- An aggregate root: its children's staging triggers and its commit-time flush.
        PERFORM whk.capture_aggregate_uninstall(v_agg, v_fn);
        -- What this transaction staged for it will not be flushed now: it must not outlive the transaction.
        DELETE FROM whk.capture_aggregate_pending AS p
         WHERE p.txid = pg_current_xact_id() AND p.aggregate = v_prefix;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class r WHERE r.oid = p_tbl) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_insert ON %s', p_tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_update ON %s', p_tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_delete ON %s', p_tbl);
    END IF;
    -- One function per operation (migration 0019).
    EXECUTE format('DROP FUNCTION IF EXISTS whk.%I(), whk.%I(), whk.%I()',
                   v_fn || '_ins', v_fn || '_upd', v_fn || '_del');
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.disable_capture(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.disable_capture(regclass) IS
    'Stop capturing a table: drop its triggers and generated functions; queued events stay.';
