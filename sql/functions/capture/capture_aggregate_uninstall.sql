-- whk.capture_aggregate_uninstall: remove what whk.capture_aggregate_install attached for an aggregate:
-- the staging triggers of the given children ('schema.table.column' elements of
-- whk.capture_config.aggregate; tables dropped since are skipped) and, when function_name is given, the
-- rest: the deferred flush (constraint trigger <function_name>_agg on whk.capture_aggregate_pending and
-- its function) and the children's staging functions <function_name>_<n>i|u|d. The root's own triggers
-- and functions are per-row capture's names and go with them (whk.disable_capture, whk.capture_install).
-- Used by whk.enable_capture (children removed, or back to per-row capture) and whk.disable_capture.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_uninstall(children text[], function_name text)
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
    IF function_name IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass
                                                AND t.tgname = function_name || '_agg') THEN
            EXECUTE format('DROP TRIGGER %I ON whk.capture_aggregate_pending', function_name || '_agg');
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS whk.%I()', function_name || '_agg');
        FOR v_trg IN SELECT p.proname FROM pg_proc p
                      WHERE p.pronamespace = 'whk'::regnamespace
                        AND left(p.proname, length(function_name) + 1) = function_name || '_'
                        AND substr(p.proname, length(function_name) + 2) ~ '^[0-9]+[iud]$' LOOP
            EXECUTE format('DROP FUNCTION whk.%I()', v_trg);
        END LOOP;
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_uninstall(text[], text) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_uninstall(text[], text) IS
    'Drop the staging triggers of aggregate children and, given its function name, an aggregate''s flush and staging functions.';
