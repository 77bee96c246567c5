-- Why one number of a JSON setting is out of its bounds, or NULL when it is fine (an absent member is fine).
-- The CHECKs on JSON settings (retry policies, breaker settings, global settings, alert conditions) are built
-- from it: the dispatcher's claim and outcome statements cast these members (::integer, ::double precision)
-- inside their arithmetic, so a string, a fraction where an integer is read, or a value outside its bounds
-- (a denormal rate underflows, a huge one overflows) must never reach a row. Integers must be written as
-- integers (5, not 5.0): `(x ->> 'k')::integer` refuses '5.0'.
CREATE OR REPLACE FUNCTION whk.setting_number_problem(p_name text, p_value jsonb, p_min numeric, p_max numeric,
                                                      p_integer boolean DEFAULT false,
                                                      p_nullable boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    IF p_value IS NULL OR (p_nullable AND jsonb_typeof(p_value) = 'null') THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_value) <> 'number' OR (p_integer AND p_value::text !~ '^-?[0-9]+$') THEN
        RETURN format('%s must be %s%s', p_name, CASE WHEN p_integer THEN 'an integer' ELSE 'a number' END,
                      CASE WHEN p_nullable THEN ' or null' ELSE '' END);
    END IF;
    IF p_value::numeric < p_min OR p_value::numeric > p_max THEN
        RETURN format('%s must be between %s and %s, got %s', p_name, p_min, p_max, left(p_value::text, 40));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.setting_number_problem(text, jsonb, numeric, numeric, boolean, boolean) IS
    'Why a JSON setting''s number is out of bounds (NULL = fine); the building block of the JSON setting CHECKs.';
