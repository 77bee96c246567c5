-- whk.capture_aggregate_uninstall: remove what whk.capture_aggregate_install attached for an aggregate:
-- the staging triggers of the given children ('schema.table.column' elements of
-- whk.capture_config.aggregate; tables dropped since are skipped) and, when flush is given, the aggregate's
-- deferred flush (its constraint trigger on whk.capture_aggregate_pending and its function). Used by
-- whk.enable_capture (children removed, or back to per-row capture) and whk.disable_capture.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_uninstall(children text[], flush text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_elem  text;
    v_parts text[];
    v_child regclass;
    v_trg   text;
BEGIN
    FOREACH v_elem IN ARRAY coalesce(children, '{}') LOOP
        v_parts := parse_ident(v_elem);
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        CONTINUE WHEN v_child IS NULL;
        FOREACH v_trg IN ARRAY ARRAY['whk_aggregate_insert', 'whk_aggregate_update', 'whk_aggregate_delete'] LOOP
            IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = v_child AND t.tgname = v_trg) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', v_trg, v_child);
            END IF;
        END LOOP;
    END LOOP;
    IF flush IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass AND t.tgname = flush) THEN
            EXECUTE format('DROP TRIGGER %I ON whk.capture_aggregate_pending', flush);
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS whk.%I()', flush);
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_uninstall(text[], text) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_uninstall(text[], text) IS
    'Drop the staging triggers of aggregate children and, if named, an aggregate''s commit-time flush.';
