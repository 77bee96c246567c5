-- whk.config_value_refuse: a global setting written out of bounds with plain SQL (the DBA's interface to
-- whk_05_configuracoes) is refused with what is wrong and where the bounds are, rather than with the bare
-- CHECK violation of whk_05_configuracoes_value_bounds (which stays, and names the same constraint).
CREATE OR REPLACE FUNCTION whk.config_value_refuse()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text := whk.config_value_problem(NEW.key, NEW.value);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk_05_configuracoes %: %', NEW.key, v_problem
            USING ERRCODE = 'check_violation', SCHEMA = 'whk', TABLE = 'whk_05_configuracoes',
                  CONSTRAINT = 'whk_05_configuracoes_value_bounds',
                  HINT = 'Every setting''s bounds: docs/configuration.md, "Bounds of every setting". '
                         'SELECT whk.config_value_problem(key, value) checks a value before it is written.';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.config_value_refuse() IS
    'Trigger: refuse an out-of-bounds whk_05_configuracoes value naming the problem (see config_value_problem).';

CREATE TRIGGER whk_05_configuracoes_bounds
    BEFORE INSERT OR UPDATE OF key, value ON whk.whk_05_configuracoes
    FOR EACH ROW EXECUTE FUNCTION whk.config_value_refuse();
