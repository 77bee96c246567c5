-- whk.event_version_check_path: compile a schema version's fast check (whk.jsonschema_jsonpath) whenever
-- its schema is written, so validation never compiles at run time and the stored check always matches
-- the stored schema.
CREATE OR REPLACE FUNCTION whk.event_version_check_path()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    NEW.check_path := whk.jsonschema_jsonpath(NEW.schema);
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.event_version_check_path() IS
    'Trigger: keep whk_02_eventos_versoes.check_path compiled from schema.';

CREATE TRIGGER whk_02_eventos_versoes_check_path
    BEFORE INSERT OR UPDATE OF schema ON whk.whk_02_eventos_versoes
    FOR EACH ROW EXECUTE FUNCTION whk.event_version_check_path();

-- Versions written before this trigger existed (the seeded catalog of a fresh install, or every version
-- of an upgraded one) are compiled now; the trigger does it.
UPDATE whk.whk_02_eventos_versoes SET schema = schema WHERE check_path IS NULL;
