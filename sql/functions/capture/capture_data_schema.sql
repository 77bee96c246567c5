-- whk.capture_data_schema: the JSON Schema (draft 2020-12) of the `data` of a captured row event, derived
-- from the table's columns. whk.enable_capture registers it for <prefix>.created|updated|deleted when the
-- type is not in the catalog yet. No column is required (columns come and go); each has its JSON type
-- (numeric and float also allow the strings "NaN"/"Infinity"; nullable columns allow null).
CREATE OR REPLACE FUNCTION whk.capture_data_schema(tbl regclass, op text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   jsonb;
    v_props jsonb;
BEGIN
    SELECT coalesce(jsonb_object_agg(a.attname, s.schema ORDER BY a.attnum), '{}'::jsonb) INTO v_props
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
      CROSS JOIN LATERAL (
          SELECT coalesce(b.oid, t.oid) AS oid, coalesce(b.typcategory, t.typcategory) AS cat
      ) AS base
      CROSS JOIN LATERAL (
          SELECT CASE
                     WHEN base.oid IN ('json'::regtype, 'jsonb'::regtype) THEN '{}'::jsonb
                     ELSE jsonb_build_object('type',
                         CASE WHEN a.attnotnull THEN j.types ELSE j.types || '["null"]'::jsonb END)
                 END AS schema
            FROM (SELECT CASE
                             WHEN base.oid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'oid'::regtype)
                                 THEN '["integer"]'::jsonb
                             WHEN base.oid IN ('numeric'::regtype, 'float4'::regtype, 'float8'::regtype)
                                 THEN '["number", "string"]'::jsonb
                             WHEN base.cat = 'B' THEN '["boolean"]'::jsonb
                             WHEN base.cat = 'A' THEN '["array"]'::jsonb
                             WHEN base.cat = 'C' THEN '["object"]'::jsonb
                             ELSE '["string"]'::jsonb
                         END AS types) AS j
      ) AS s
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
    v_row := jsonb_build_object('type', 'object', 'properties', v_props);
    RETURN jsonb_build_object(
        '$schema', 'https://json-schema.org/draft/2020-12/schema',
        'type', 'object',
        'required', jsonb_build_array('op', 'table', 'new', 'old', 'changed'),
        'properties', jsonb_build_object(
            'op', jsonb_build_object('const', op),
            'table', jsonb_build_object('type', 'string'),
            'new', CASE WHEN op = 'DELETE' THEN '{"type": "null"}'::jsonb ELSE v_row END,
            'old', CASE WHEN op = 'INSERT' THEN '{"type": "null"}'::jsonb ELSE v_row END,
            'changed', CASE WHEN op = 'UPDATE'
                            THEN '{"type": "array", "items": {"type": "string"}, "minItems": 1}'::jsonb
                            ELSE '{"type": "null"}'::jsonb END));
END;
$$;
COMMENT ON FUNCTION whk.capture_data_schema(regclass, text) IS
    'JSON Schema of the data of a captured INSERT/UPDATE/DELETE event of a table, from its columns.';
