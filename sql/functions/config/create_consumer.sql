-- The SQL control plane (docs/dba.md): create a consumer (tenant) with the API's validation
-- (api/consumers/schemas.py ConsumerCreate); bad input raises invalid_parameter_value naming the parameter,
-- with a HINT, never a bare constraint error. Named notation reads best:
--   SELECT whk.create_consumer(name => 'acme', contact_email => 'ops@acme.example');
-- Returns the new id. Audited like any SQL change (whk.audit_sql_change, actor = the database role).
CREATE OR REPLACE FUNCTION whk.create_consumer(
    name                      text,
    description               text    DEFAULT NULL,
    contact_name              text    DEFAULT NULL,
    contact_email             text    DEFAULT NULL,
    status                    text    DEFAULT 'active',
    rate_limit_per_second     numeric DEFAULT NULL,
    rate_limit_burst          integer DEFAULT NULL,
    api_rate_limit_per_minute integer DEFAULT NULL,
    quota_deliveries_per_day  bigint  DEFAULT NULL,
    metadata                  jsonb   DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text;
    v_id      bigint;
BEGIN
    v_problem := CASE
        WHEN create_consumer.name IS NULL OR length(create_consumer.name) NOT BETWEEN 1 AND 200
            THEN 'name must have 1 to 200 characters'
        WHEN EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.name = create_consumer.name)
            THEN format('name %L is taken by another consumer', create_consumer.name)
        WHEN length(create_consumer.description) > 2000 THEN 'description must have at most 2000 characters'
        WHEN length(create_consumer.contact_name) > 200 THEN 'contact_name must have at most 200 characters'
        WHEN create_consumer.contact_email IS NOT NULL
             AND (length(create_consumer.contact_email) > 320 OR create_consumer.contact_email !~ '^[^@\s]+@[^@\s]+$')
            THEN 'contact_email must look like user@host (at most 320 characters)'
        WHEN create_consumer.status IS NULL OR create_consumer.status NOT IN ('active', 'suspended', 'disabled')
            THEN 'status must be active, suspended or disabled'
        WHEN create_consumer.rate_limit_per_second NOT BETWEEN 0.001 AND 1000000
            THEN 'rate_limit_per_second must be NULL (no limit) or between 0.001 and 1000000'
        WHEN create_consumer.rate_limit_burst NOT BETWEEN 1 AND 1000000
            THEN 'rate_limit_burst must be NULL or between 1 and 1000000'
        WHEN create_consumer.api_rate_limit_per_minute NOT BETWEEN 1 AND 1000000000
            THEN 'api_rate_limit_per_minute must be NULL (the global default) or between 1 and 1000000000'
        WHEN create_consumer.quota_deliveries_per_day NOT BETWEEN 1 AND 1000000000
            THEN 'quota_deliveries_per_day must be NULL (no quota) or between 1 and 1000000000'
        WHEN create_consumer.metadata IS NULL OR jsonb_typeof(create_consumer.metadata) <> 'object'
            THEN 'metadata must be a JSON object'
    END;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.create_consumer: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The parameters and their bounds: docs/dba.md, "SQL control plane" (the same as '
                         'POST /api/whk/consumers). Existing consumers: SELECT id, name FROM whk.whk_04_assinantes.';
    END IF;
    INSERT INTO whk.whk_04_assinantes AS a (name, description, contact_name, contact_email, status,
                                           rate_limit_per_second, rate_limit_burst, api_rate_limit_per_minute,
                                           quota_deliveries_per_day, metadata)
    VALUES (create_consumer.name, create_consumer.description, create_consumer.contact_name,
            create_consumer.contact_email, create_consumer.status, create_consumer.rate_limit_per_second,
            create_consumer.rate_limit_burst, create_consumer.api_rate_limit_per_minute,
            create_consumer.quota_deliveries_per_day, create_consumer.metadata)
    RETURNING a.id INTO v_id;
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.create_consumer(text, text, text, text, text, numeric, integer, integer, bigint, jsonb) IS
    'SQL control plane: create a consumer with the API''s validation (bad input raises with a HINT); returns its id.';
