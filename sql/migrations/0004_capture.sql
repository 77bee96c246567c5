-- 0004 capture: ERP commits become outbox events in the same transaction (capture triggers, whk.emit),
-- the event catalog with the spec's 18 types and schema versioning, the conditional wake-up of idle
-- dispatchers and outbox retention by partition. Readable sources: sql/schema/20x_*.sql and
-- sql/functions/*.sql (kept equal by the drift test). The demo ERP is NOT here: sql/demo/erp.sql.
BEGIN;
SELECT whk.migration_begin(4, 'capture');

-- ===== schema/200_capture_config.sql
-- Capture settings per ERP table, written only by whk.enable_capture / whk.disable_capture.
-- The generated trigger function bakes these values in (no lookups while the ERP commits); this table is
-- the record of what was asked for, so the functions can be regenerated (new event major, re-enable).
CREATE TABLE whk.capture_config (
    -- regclass: dumps and restores by name (and pg_upgrade keeps relation OIDs).
    tbl           regclass    PRIMARY KEY,
    event_prefix  text        NOT NULL CHECK (event_prefix ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    -- As given (NULL = the primary key) and as resolved when the triggers were generated.
    key_column    text,
    key_columns   text[]      NOT NULL DEFAULT '{}',
    -- Listened columns: an UPDATE emits only when one of them changed (NULL = any column).
    columns       text[],
    -- SQL boolean over `new` and `old`; rows for which it is not true write nothing.
    condition     text,
    operations    text[]      NOT NULL DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE']
                              CHECK (operations <@ ARRAY['INSERT', 'UPDATE', 'DELETE'] AND cardinality(operations) > 0),
    function_name text        NOT NULL,
    enabled_at    timestamptz NOT NULL DEFAULT now(),
    enabled_by    text        NOT NULL DEFAULT current_user,
    CONSTRAINT capture_config_event_prefix_key UNIQUE (event_prefix)
);
COMMENT ON TABLE whk.capture_config IS
    'ERP tables captured into the outbox (one row per table); managed by whk.enable_capture/disable_capture.';

-- ===== schema/201_captured_tables.sql
-- What is captured, with its settings and whether its three triggers are really in place.
CREATE VIEW whk.captured_tables AS
SELECT c.tbl,
       c.tbl::text                                         AS table_name,
       n.nspname                                           AS schema_name,
       r.relname                                           AS relation_name,
       c.event_prefix,
       ARRAY(SELECT c.event_prefix || '.' || CASE op WHEN 'INSERT' THEN 'created'
                                                      WHEN 'UPDATE' THEN 'updated'
                                                      ELSE 'deleted' END
             FROM unnest(c.operations) AS op)              AS event_types,
       c.operations,
       c.key_column,
       c.key_columns,
       c.columns,
       c.condition,
       c.function_name,
       -- false when someone dropped or disabled a capture trigger behind WHK's back.
       (SELECT count(*) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = c.tbl AND t.tgenabled <> 'D'
           AND t.tgname IN ('whk_capture_insert', 'whk_capture_update', 'whk_capture_delete'))
           = cardinality(c.operations)                     AS active,
       c.enabled_at,
       c.enabled_by
FROM whk.capture_config c
LEFT JOIN pg_catalog.pg_class r ON r.oid = c.tbl
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace;
COMMENT ON VIEW whk.captured_tables IS 'Captured ERP tables, their event types and settings (see docs/capture.md).';

-- ===== schema/202_whk_02_eventos_seed.sql
-- The event types of the spec (Tipos de Eventos Suportados), version 1.0 each, with a JSON Schema
-- (draft 2020-12) of their `data`. Row events share the shape written by whk.enable_capture:
-- {"op", "table", "new", "old", "changed"}; the order status types are UPDATEs whose new status is fixed.
-- The row schemas name the fields consumers can count on (the key) and type the usual ones; other
-- columns are allowed, so an ERP's own users/orders/products tables fit without a new major.
WITH rows (entity, row_schema) AS (
    VALUES
    ('user', '{"type": "object", "required": ["id"], "properties": {
        "id": {"type": ["integer", "string"]},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "active": {"type": ["boolean", "null"]}}}'::jsonb),
    ('order', '{"type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": ["integer", "string"]},
        "user_id": {"type": ["integer", "string", "null"]},
        "status": {"type": "string"},
        "total": {"type": ["number", "string", "null"]},
        "currency": {"type": ["string", "null"]}}}'::jsonb),
    ('product', '{"type": "object", "required": ["id"], "properties": {
        "id": {"type": ["integer", "string"]},
        "sku": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "price": {"type": ["number", "string", "null"]},
        "stock": {"type": ["integer", "null"]}}}'::jsonb)
),
row_types (name, entity, op, new_status, description) AS (
    VALUES
    ('user.created', 'user', 'INSERT', NULL, 'A user account was created.'),
    ('user.updated', 'user', 'UPDATE', NULL, 'A user account was changed.'),
    ('user.deleted', 'user', 'DELETE', NULL, 'A user account was deleted.'),
    ('order.created', 'order', 'INSERT', NULL, 'An order was placed.'),
    ('order.updated', 'order', 'UPDATE', NULL,
     'An order changed (status changes to cancelled, completed or shipped have their own types).'),
    ('order.cancelled', 'order', 'UPDATE', 'cancelled', 'An order''s status became cancelled.'),
    ('order.completed', 'order', 'UPDATE', 'completed', 'An order''s status became completed.'),
    ('order.shipped', 'order', 'UPDATE', 'shipped', 'An order''s status became shipped.'),
    ('product.created', 'product', 'INSERT', NULL, 'A product was created.'),
    ('product.updated', 'product', 'UPDATE', NULL, 'A product was changed.'),
    ('product.deleted', 'product', 'DELETE', NULL, 'A product was deleted.')
),
types (name, category, description, data_schema) AS (
    SELECT t.name, t.entity, t.description,
           jsonb_build_object(
               'type', 'object',
               'required', '["op", "table", "new", "old", "changed"]'::jsonb,
               'properties', jsonb_build_object(
                   'op', jsonb_build_object('const', t.op),
                   'table', '{"type": "string"}'::jsonb,
                   'new', CASE WHEN t.op = 'DELETE' THEN '{"type": "null"}'::jsonb
                               WHEN t.new_status IS NOT NULL
                               THEN jsonb_set(r.row_schema, '{properties,status}',
                                              jsonb_build_object('const', t.new_status))
                               ELSE r.row_schema END,
                   'old', CASE WHEN t.op = 'INSERT' THEN '{"type": "null"}'::jsonb ELSE r.row_schema END,
                   'changed', CASE WHEN t.op = 'UPDATE'
                                   THEN '{"type": "array", "items": {"type": "string"}, "minItems": 1}'::jsonb
                                   ELSE '{"type": "null"}'::jsonb END))
      FROM row_types t JOIN rows r USING (entity)
    UNION ALL
    VALUES
    ('user.login', 'user', 'A user signed in (a session started).',
     '{"type": "object", "required": ["user_id", "session_id", "at"], "properties": {
        "user_id": {"type": ["integer", "string"]},
        "session_id": {"type": ["integer", "string"]},
        "at": {"type": "string", "format": "date-time"},
        "ip": {"type": ["string", "null"]},
        "user_agent": {"type": ["string", "null"]}}}'::jsonb),
    ('user.logout', 'user', 'A user signed out (a session ended).',
     '{"type": "object", "required": ["user_id", "session_id", "at"], "properties": {
        "user_id": {"type": ["integer", "string"]},
        "session_id": {"type": ["integer", "string"]},
        "at": {"type": "string", "format": "date-time"},
        "reason": {"type": ["string", "null"]},
        "duration_s": {"type": ["number", "null"], "minimum": 0}}}'::jsonb),
    ('product.out_of_stock', 'product', 'A product''s stock dropped from above zero to zero or below.',
     '{"type": "object", "required": ["product_id", "stock", "previous_stock"], "properties": {
        "product_id": {"type": ["integer", "string"]},
        "sku": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "stock": {"type": "integer", "maximum": 0},
        "previous_stock": {"type": "integer", "minimum": 1}}}'::jsonb),
    ('system.startup', 'system', 'A WHK component (dispatcher, API) started.', NULL),
    ('system.shutdown', 'system', 'A WHK component (dispatcher, API) stopped.', NULL),
    ('system.health_check', 'system', 'Periodic health snapshot (outbox backlog, live dispatchers).', NULL),
    ('system.backup_completed', 'system', 'A database backup finished (emitted by the backup job).', NULL)
),
inserted AS (
    INSERT INTO whk.whk_02_eventos (name, description, category, strict, current_major, current_minor, metadata)
    SELECT name, description, category, false, 1, 0, '{"seed": true}'::jsonb
      FROM types
    RETURNING id, name
)
INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
SELECT i.id, 1, 0,
       '{"$schema": "https://json-schema.org/draft/2020-12/schema"}'::jsonb
       || coalesce(t.data_schema,
                   '{"type": "object", "required": ["component", "database", "details"], "properties": {
                       "component": {"type": "string"},
                       "database": {"type": "string"},
                       "details": {"type": "object"}}}'::jsonb),
       'initial version (seed)'
  FROM inserted i JOIN types t USING (name);

-- ===== schema/203_dispatcher_idle_until.sql
-- Cache of "some live dispatcher is idle until <epoch second>": max(heartbeat_at) + 60 s over idle rows of
-- whk.dispatchers, 0 when none. Kept by the trigger whk.dispatchers_idle_refresh (sql/triggers) on every
-- change of whk.dispatchers. Why a sequence: capture triggers read it with pg_sequence_last_value() as a
-- plain function call (~1 us) instead of running a query on every ERP statement (~15 us measured).
CREATE SEQUENCE whk.dispatcher_idle_until AS bigint MINVALUE 0 START WITH 0;
COMMENT ON SEQUENCE whk.dispatcher_idle_until IS
    'Epoch second until which some dispatcher counts as idle (capture NOTIFYs only before it); see docs/capture.md.';

-- ===== schema/204_outbox_partitions.sql
-- The partitions of whk.outbox with their time ranges (NULL bounds for the default partition): what
-- whk.outbox_create_partitions and whk.outbox_drop_partitions work from, and what a DBA looks at.
CREATE VIEW whk.outbox_partitions AS
SELECT p.oid::regclass                                                          AS partition,
       n.nspname || '.' || p.relname                                            AS partition_name,
       (substring(b.bound FROM 'FROM \(''([^'']+)''\)'))::timestamptz          AS range_from,
       (substring(b.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz            AS range_to,
       b.bound = 'DEFAULT'                                                      AS is_default
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS bound) AS b
WHERE i.inhparent = 'whk.outbox'::regclass;
COMMENT ON VIEW whk.outbox_partitions IS 'Partitions of whk.outbox and their created_at ranges (see docs/capture.md).';

-- ===== functions/jsonschema_error.sql
-- whk.jsonschema_error: validate a JSON value against a JSON Schema (draft 2020-12 subset) in SQL.
-- Returns NULL when valid, else the first error as '<JSON pointer>: <what is wrong>'.
-- Why in PL/pgSQL: strict event types are validated inside the emitting transaction, with no round trip.
-- Supported assertions (anything else is refused at registration by whk.jsonschema_problem, so no rule
-- is ever silently ignored): type, enum, const, required, properties, additionalProperties,
-- minProperties, maxProperties, items, prefixItems, minItems, maxItems, uniqueItems, minimum, maximum,
-- exclusiveMinimum, exclusiveMaximum, multipleOf, minLength, maxLength, pattern (PostgreSQL regular
-- expressions), allOf, anyOf, oneOf, not, if/then/else, local $ref ('#', '#/$defs/...').
-- Annotations (title, description, default, examples, format, ...) do not assert anything.
CREATE OR REPLACE FUNCTION whk.jsonschema_error(
    p_schema   jsonb,
    p_instance jsonb,
    p_path     text DEFAULT '',
    p_root     jsonb DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_root  jsonb := coalesce(p_root, p_schema);
    v_where text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_inst  jsonb := coalesce(p_instance, 'null'::jsonb);  -- SQL NULL is validated as JSON null
    v_kind  text;
    v_types text[];
    v_err   text;
    v_key   text;
    v_sub   jsonb;
    v_num   numeric;
    v_str   text;
    v_i     bigint;
    v_n     integer;
BEGIN
    IF p_schema IS NULL OR p_schema = 'true'::jsonb THEN
        RETURN NULL;
    END IF;
    IF p_schema = 'false'::jsonb THEN
        RETURN v_where || ': no value is allowed here';
    END IF;
    IF jsonb_typeof(p_schema) <> 'object' THEN
        RETURN NULL;
    END IF;
    v_kind := jsonb_typeof(v_inst);

    IF p_schema ? '$ref' THEN
        v_str := p_schema ->> '$ref';
        IF v_str = '#' THEN
            v_sub := v_root;
        ELSIF v_str LIKE '#/%' THEN
            v_sub := v_root #> ARRAY(SELECT replace(replace(s, '~1', '/'), '~0', '~')
                                     FROM unnest(string_to_array(substr(v_str, 3), '/')) AS s);
        END IF;
        IF v_sub IS NULL THEN
            RETURN format('%s: unresolvable $ref %s', v_where, v_str);
        END IF;
        v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
        IF v_err IS NOT NULL THEN
            RETURN v_err;
        END IF;
    END IF;

    IF p_schema ? 'type' THEN
        v_types := CASE jsonb_typeof(p_schema -> 'type')
                       WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(p_schema -> 'type'))
                       ELSE ARRAY[p_schema ->> 'type'] END;
        IF NOT (v_kind = ANY (v_types)
                OR (v_kind = 'number' AND 'integer' = ANY (v_types) AND v_inst::numeric % 1 = 0)) THEN
            RETURN format('%s: expected %s, got %s', v_where, array_to_string(v_types, ' or '), v_kind);
        END IF;
    END IF;

    IF p_schema ? 'const' AND v_inst IS DISTINCT FROM p_schema -> 'const' THEN
        RETURN format('%s: must be %s', v_where, left((p_schema -> 'const')::text, 200));
    END IF;

    IF p_schema ? 'enum' AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_schema -> 'enum') AS e
                                          WHERE e.value = v_inst) THEN
        RETURN format('%s: %s is not one of %s', v_where, left(v_inst::text, 100),
                      left((p_schema -> 'enum')::text, 200));
    END IF;

    IF v_kind = 'number' THEN
        v_num := v_inst::numeric;
        IF p_schema ? 'minimum' AND v_num < (p_schema ->> 'minimum')::numeric THEN
            RETURN format('%s: %s is less than the minimum %s', v_where, v_num, p_schema ->> 'minimum');
        END IF;
        IF p_schema ? 'exclusiveMinimum' AND v_num <= (p_schema ->> 'exclusiveMinimum')::numeric THEN
            RETURN format('%s: %s must be greater than %s', v_where, v_num, p_schema ->> 'exclusiveMinimum');
        END IF;
        IF p_schema ? 'maximum' AND v_num > (p_schema ->> 'maximum')::numeric THEN
            RETURN format('%s: %s is greater than the maximum %s', v_where, v_num, p_schema ->> 'maximum');
        END IF;
        IF p_schema ? 'exclusiveMaximum' AND v_num >= (p_schema ->> 'exclusiveMaximum')::numeric THEN
            RETURN format('%s: %s must be less than %s', v_where, v_num, p_schema ->> 'exclusiveMaximum');
        END IF;
        IF p_schema ? 'multipleOf' AND v_num % (p_schema ->> 'multipleOf')::numeric <> 0 THEN
            RETURN format('%s: %s is not a multiple of %s', v_where, v_num, p_schema ->> 'multipleOf');
        END IF;
    ELSIF v_kind = 'string' THEN
        v_str := v_inst #>> '{}';
        IF p_schema ? 'minLength' AND char_length(v_str) < (p_schema ->> 'minLength')::integer THEN
            RETURN format('%s: shorter than %s characters', v_where, p_schema ->> 'minLength');
        END IF;
        IF p_schema ? 'maxLength' AND char_length(v_str) > (p_schema ->> 'maxLength')::integer THEN
            RETURN format('%s: longer than %s characters', v_where, p_schema ->> 'maxLength');
        END IF;
        IF p_schema ? 'pattern' AND v_str !~ (p_schema ->> 'pattern') THEN
            RETURN format('%s: does not match the pattern %s', v_where, p_schema ->> 'pattern');
        END IF;
    ELSIF v_kind = 'object' THEN
        IF p_schema ? 'required' THEN
            FOR v_key IN SELECT jsonb_array_elements_text(p_schema -> 'required') LOOP
                IF NOT v_inst ? v_key THEN
                    RETURN format('%s: required property "%s" is missing', v_where, v_key);
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'properties' THEN
            FOR v_key, v_sub IN SELECT e.key, e.value FROM jsonb_each(p_schema -> 'properties') AS e LOOP
                IF v_inst ? v_key THEN
                    v_err := whk.jsonschema_error(
                        v_sub, v_inst -> v_key,
                        p_path || '/' || replace(replace(v_key, '~', '~0'), '/', '~1'), v_root);
                    IF v_err IS NOT NULL THEN
                        RETURN v_err;
                    END IF;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'additionalProperties' AND p_schema -> 'additionalProperties' <> 'true'::jsonb THEN
            FOR v_key IN SELECT k FROM jsonb_object_keys(v_inst) AS k
                          WHERE NOT coalesce(p_schema -> 'properties' ? k, false) LOOP
                IF p_schema -> 'additionalProperties' = 'false'::jsonb THEN
                    RETURN format('%s: additional property "%s" is not allowed', v_where, v_key);
                END IF;
                v_err := whk.jsonschema_error(
                    p_schema -> 'additionalProperties', v_inst -> v_key,
                    p_path || '/' || replace(replace(v_key, '~', '~0'), '/', '~1'), v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'minProperties' OR p_schema ? 'maxProperties' THEN
            SELECT count(*) INTO v_n FROM jsonb_object_keys(v_inst);
            IF v_n < coalesce((p_schema ->> 'minProperties')::integer, 0) THEN
                RETURN format('%s: fewer than %s properties', v_where, p_schema ->> 'minProperties');
            END IF;
            IF v_n > coalesce((p_schema ->> 'maxProperties')::integer, v_n) THEN
                RETURN format('%s: more than %s properties', v_where, p_schema ->> 'maxProperties');
            END IF;
        END IF;
    ELSIF v_kind = 'array' THEN
        v_n := jsonb_array_length(v_inst);
        IF v_n < coalesce((p_schema ->> 'minItems')::integer, 0) THEN
            RETURN format('%s: fewer than %s items', v_where, p_schema ->> 'minItems');
        END IF;
        IF v_n > coalesce((p_schema ->> 'maxItems')::integer, v_n) THEN
            RETURN format('%s: more than %s items', v_where, p_schema ->> 'maxItems');
        END IF;
        IF p_schema -> 'uniqueItems' = 'true'::jsonb
           AND (SELECT count(DISTINCT e.value) FROM jsonb_array_elements(v_inst) AS e) < v_n THEN
            RETURN format('%s: items are not unique', v_where);
        END IF;
        IF p_schema ? 'prefixItems' THEN
            FOR v_sub, v_i IN SELECT e.value, e.ordinality - 1
                               FROM jsonb_array_elements(p_schema -> 'prefixItems') WITH ORDINALITY AS e LOOP
                EXIT WHEN v_i >= v_n;
                v_err := whk.jsonschema_error(v_sub, v_inst -> v_i::integer, p_path || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
        IF p_schema ? 'items' THEN
            FOR v_i IN coalesce(jsonb_array_length(p_schema -> 'prefixItems'), 0) .. v_n - 1 LOOP
                v_err := whk.jsonschema_error(p_schema -> 'items', v_inst -> v_i::integer,
                                              p_path || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        END IF;
    END IF;

    IF p_schema ? 'allOf' THEN
        FOR v_sub IN SELECT e.value FROM jsonb_array_elements(p_schema -> 'allOf') AS e LOOP
            v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
            IF v_err IS NOT NULL THEN
                RETURN v_err;
            END IF;
        END LOOP;
    END IF;
    IF p_schema ? 'anyOf' THEN
        v_str := NULL;
        FOR v_sub IN SELECT e.value FROM jsonb_array_elements(p_schema -> 'anyOf') AS e LOOP
            v_err := whk.jsonschema_error(v_sub, v_inst, p_path, v_root);
            IF v_err IS NULL THEN
                v_str := 'ok';
                EXIT;
            END IF;
        END LOOP;
        IF v_str IS NULL THEN
            RETURN format('%s: matches none of the anyOf schemas', v_where);
        END IF;
    END IF;
    IF p_schema ? 'oneOf' THEN
        SELECT count(*) INTO v_n FROM jsonb_array_elements(p_schema -> 'oneOf') AS e
         WHERE whk.jsonschema_error(e.value, v_inst, p_path, v_root) IS NULL;
        IF v_n <> 1 THEN
            RETURN format('%s: matches %s of the oneOf schemas instead of exactly one', v_where, v_n);
        END IF;
    END IF;
    IF p_schema ? 'not' AND whk.jsonschema_error(p_schema -> 'not', v_inst, p_path, v_root) IS NULL THEN
        RETURN format('%s: must not match the schema under "not"', v_where);
    END IF;
    IF p_schema ? 'if' THEN
        IF whk.jsonschema_error(p_schema -> 'if', v_inst, p_path, v_root) IS NULL THEN
            RETURN whk.jsonschema_error(p_schema -> 'then', v_inst, p_path, v_root);
        END IF;
        RETURN whk.jsonschema_error(p_schema -> 'else', v_inst, p_path, v_root);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_error(jsonb, jsonb, text, jsonb) IS
    'First JSON Schema (2020-12 subset) violation of a value as "<pointer>: <message>", NULL when valid.';

-- ===== functions/jsonschema_problem.sql
-- whk.jsonschema_problem: is this a JSON Schema that whk.jsonschema_error can enforce completely?
-- Returns NULL when it is, else '<pointer into the schema>: <problem>'. Assertion keywords outside the
-- supported subset are refused rather than ignored, so a registered schema always means what it says.
CREATE OR REPLACE FUNCTION whk.jsonschema_problem(p_schema jsonb, p_path text DEFAULT '', p_root jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_root     jsonb := coalesce(p_root, p_schema);
    v_where    text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_key      text;
    v_name     text;
    v_val      jsonb;
    v_err      text;
    v_sub      jsonb;
    v_i        bigint;
    c_annotations CONSTANT text[] := ARRAY['$schema', '$id', '$comment', '$anchor', 'title', 'description',
        'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'format', 'contentEncoding',
        'contentMediaType', 'x-whk'];
    c_numbers  CONSTANT text[] := ARRAY['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
        'multipleOf'];
    c_counts   CONSTANT text[] := ARRAY['minLength', 'maxLength', 'minItems', 'maxItems', 'minProperties',
        'maxProperties'];
    c_types    CONSTANT text[] := ARRAY['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'];
BEGIN
    IF p_schema IS NULL THEN
        RETURN v_where || ': schema is missing';
    END IF;
    IF jsonb_typeof(p_schema) = 'boolean' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_schema) <> 'object' THEN
        RETURN format('%s: a schema is a JSON object or a boolean, not %s', v_where, jsonb_typeof(p_schema));
    END IF;
    FOR v_key, v_val IN SELECT e.key, e.value FROM jsonb_each(p_schema) AS e LOOP
        CONTINUE WHEN v_key = ANY (c_annotations);
        IF v_key = 'type' THEN
            IF NOT (jsonb_typeof(v_val) = 'string' AND v_val #>> '{}' = ANY (c_types))
               AND NOT (jsonb_typeof(v_val) = 'array' AND jsonb_array_length(v_val) > 0
                        AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_val) AS t
                                        WHERE jsonb_typeof(t.value) <> 'string'
                                           OR NOT (t.value #>> '{}' = ANY (c_types)))) THEN
                RETURN format('%s/type: must be one of %s or an array of them', p_path, array_to_string(c_types, ', '));
            END IF;
        ELSIF v_key = ANY (c_numbers) THEN
            IF jsonb_typeof(v_val) <> 'number' OR (v_key = 'multipleOf' AND v_val::numeric <= 0) THEN
                RETURN format('%s/%s: must be a number%s', p_path, v_key,
                              CASE WHEN v_key = 'multipleOf' THEN ' greater than 0' ELSE '' END);
            END IF;
        ELSIF v_key = ANY (c_counts) THEN
            IF jsonb_typeof(v_val) <> 'number' OR v_val::numeric < 0 OR v_val::numeric % 1 <> 0 THEN
                RETURN format('%s/%s: must be a non-negative integer', p_path, v_key);
            END IF;
        ELSIF v_key = 'pattern' THEN
            IF jsonb_typeof(v_val) <> 'string' THEN
                RETURN format('%s/pattern: must be a string', p_path);
            END IF;
            BEGIN
                PERFORM '' ~ (v_val #>> '{}');
            EXCEPTION WHEN invalid_regular_expression THEN
                RETURN format('%s/pattern: not a valid regular expression: %s', p_path, SQLERRM);
            END;
        ELSIF v_key = 'required' THEN
            IF jsonb_typeof(v_val) <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_val) AS r WHERE jsonb_typeof(r.value) <> 'string') THEN
                RETURN format('%s/required: must be an array of property names', p_path);
            END IF;
        ELSIF v_key = 'enum' THEN
            IF jsonb_typeof(v_val) <> 'array' THEN
                RETURN format('%s/enum: must be an array', p_path);
            END IF;
        ELSIF v_key IN ('const', 'uniqueItems') THEN
            IF v_key = 'uniqueItems' AND jsonb_typeof(v_val) <> 'boolean' THEN
                RETURN format('%s/uniqueItems: must be a boolean', p_path);
            END IF;
        ELSIF v_key IN ('properties', '$defs', 'definitions') THEN
            IF jsonb_typeof(v_val) <> 'object' THEN
                RETURN format('%s/%s: must be an object of schemas', p_path, v_key);
            END IF;
            FOR v_name, v_sub IN SELECT e.key, e.value FROM jsonb_each(v_val) AS e LOOP
                v_err := whk.jsonschema_problem(
                    v_sub, p_path || '/' || v_key || '/' || replace(replace(v_name, '~', '~0'), '/', '~1'), v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key IN ('additionalProperties', 'items', 'not', 'if', 'then', 'else') THEN
            v_err := whk.jsonschema_problem(v_val, p_path || '/' || v_key, v_root);
            IF v_err IS NOT NULL THEN
                RETURN v_err;
            END IF;
        ELSIF v_key IN ('allOf', 'anyOf', 'oneOf', 'prefixItems') THEN
            IF jsonb_typeof(v_val) <> 'array' OR jsonb_array_length(v_val) = 0 THEN
                RETURN format('%s/%s: must be a non-empty array of schemas', p_path, v_key);
            END IF;
            FOR v_sub, v_i IN SELECT e.value, e.ordinality - 1 FROM jsonb_array_elements(v_val) WITH ORDINALITY AS e LOOP
                v_err := whk.jsonschema_problem(v_sub, p_path || '/' || v_key || '/' || v_i, v_root);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key = '$ref' THEN
            IF jsonb_typeof(v_val) <> 'string' OR NOT (v_val #>> '{}' = '#' OR v_val #>> '{}' LIKE '#/%') THEN
                RETURN format('%s/$ref: only local references ("#", "#/$defs/name") are supported', p_path);
            END IF;
            IF v_val #>> '{}' <> '#' AND v_root #> ARRAY(
                   SELECT replace(replace(s, '~1', '/'), '~0', '~')
                   FROM unnest(string_to_array(substr(v_val #>> '{}', 3), '/')) AS s) IS NULL THEN
                RETURN format('%s/$ref: %s does not resolve inside this schema', p_path, v_val #>> '{}');
            END IF;
        ELSE
            RETURN format('%s/%s: keyword not supported by WHK''s validator', p_path, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_problem(jsonb, text, jsonb) IS
    'NULL when a JSON Schema uses only what whk.jsonschema_error enforces, else the first problem.';

-- ===== functions/jsonschema_breaking_change.sql
-- whk.jsonschema_breaking_change: would replacing schema p_old by p_new break anyone within one major?
-- Returns NULL when the change is backward compatible (it may become a new minor version), else the
-- first breaking difference as '<pointer into the schema>: <why>'.
--
-- Compatible ("additive") changes: new optional properties (unless the old schema closed the object with
-- additionalProperties: false), new enum values, removed or looser bounds/enum/const/pattern, annotation
-- edits (title, description, examples, default, ...).
-- Breaking changes: a property removed or changed incompatibly; `required` gaining or losing a name (old
-- events or old consumers would no longer agree with it); `type` changing at all; an enum losing a value;
-- a const, enum or pattern appearing or changing; a bound appearing or tightening; additionalProperties
-- becoming stricter; any change inside allOf/anyOf/oneOf/not/if/then/else/$ref, which this check cannot
-- prove compatible (publish a new major for those).
CREATE OR REPLACE FUNCTION whk.jsonschema_breaking_change(p_old jsonb, p_new jsonb, p_path text DEFAULT '')
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_where text := CASE WHEN p_path = '' THEN '/' ELSE p_path END;
    v_old   jsonb := CASE WHEN p_old = 'true'::jsonb THEN '{}'::jsonb ELSE p_old END;
    v_new   jsonb := CASE WHEN p_new = 'true'::jsonb THEN '{}'::jsonb ELSE p_new END;
    v_key   text;
    v_o     jsonb;
    v_n     jsonb;
    v_err   text;
    v_names text;
    c_annotations CONSTANT text[] := ARRAY['$schema', '$id', '$comment', '$anchor', 'title', 'description',
        'default', 'examples', 'deprecated', 'readOnly', 'writeOnly', 'x-whk'];
    c_lower CONSTANT text[] := ARRAY['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'];
    c_upper CONSTANT text[] := ARRAY['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'];
BEGIN
    IF v_old IS NOT DISTINCT FROM v_new THEN
        RETURN NULL;
    END IF;
    IF v_new = '{}'::jsonb THEN
        RETURN NULL;  -- anything goes now: looser never breaks old events
    END IF;
    IF jsonb_typeof(v_old) <> 'object' OR jsonb_typeof(v_new) <> 'object' THEN
        RETURN format('%s: the schema changed from %s to %s', v_where, left(p_old::text, 80), left(p_new::text, 80));
    END IF;

    FOR v_key IN SELECT k FROM jsonb_object_keys(v_old) AS k UNION SELECT k FROM jsonb_object_keys(v_new) AS k LOOP
        v_o := v_old -> v_key;
        v_n := v_new -> v_key;
        CONTINUE WHEN v_o IS NOT DISTINCT FROM v_n OR v_key = ANY (c_annotations);

        IF v_key = 'type' THEN
            IF v_o IS NULL
               OR v_n IS NULL
               OR ARRAY(SELECT t FROM jsonb_array_elements_text(
                            CASE jsonb_typeof(v_o) WHEN 'array' THEN v_o ELSE jsonb_build_array(v_o) END) AS t ORDER BY t)
                  <> ARRAY(SELECT t FROM jsonb_array_elements_text(
                            CASE jsonb_typeof(v_n) WHEN 'array' THEN v_n ELSE jsonb_build_array(v_n) END) AS t ORDER BY t)
            THEN
                IF v_n IS NULL THEN
                    CONTINUE;  -- no type constraint any more: looser
                END IF;
                RETURN format('%s/type: changed from %s to %s', p_path, coalesce(v_o::text, 'any'), v_n::text);
            END IF;
        ELSIF v_key = 'required' THEN
            SELECT string_agg(format('"%s"', r), ', ') INTO v_names
              FROM (SELECT jsonb_array_elements_text(coalesce(v_n, '[]')) EXCEPT
                    SELECT jsonb_array_elements_text(coalesce(v_o, '[]'))) AS added(r);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/required: %s became required (events already emitted may lack it)', p_path, v_names);
            END IF;
            SELECT string_agg(format('"%s"', r), ', ') INTO v_names
              FROM (SELECT jsonb_array_elements_text(coalesce(v_o, '[]')) EXCEPT
                    SELECT jsonb_array_elements_text(coalesce(v_n, '[]'))) AS removed(r);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/required: %s is no longer required (consumers rely on it)', p_path, v_names);
            END IF;
        ELSIF v_key = 'properties' THEN
            FOR v_names, v_o IN SELECT e.key, e.value FROM jsonb_each(coalesce(v_old -> 'properties', '{}')) AS e LOOP
                IF NOT coalesce(v_new -> 'properties' ? v_names, false) THEN
                    RETURN format('%s/properties/%s: property removed', p_path, v_names);
                END IF;
                v_err := whk.jsonschema_breaking_change(
                    v_o, v_new -> 'properties' -> v_names,
                    p_path || '/properties/' || replace(replace(v_names, '~', '~0'), '/', '~1'));
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
            IF v_old -> 'additionalProperties' = 'false'::jsonb THEN
                SELECT string_agg(format('"%s"', k), ', ') INTO v_names
                  FROM jsonb_object_keys(coalesce(v_new -> 'properties', '{}')) AS k
                 WHERE NOT coalesce(v_old -> 'properties' ? k, false);
                IF v_names IS NOT NULL THEN
                    RETURN format('%s/properties: %s added to an object that had additionalProperties: false',
                                  p_path, v_names);
                END IF;
            END IF;
        ELSIF v_key = 'additionalProperties' THEN
            IF v_n = 'false'::jsonb THEN
                RETURN format('%s/additionalProperties: became false', p_path);
            ELSIF v_n IS NOT NULL AND v_n <> 'true'::jsonb THEN
                v_err := whk.jsonschema_breaking_change(coalesce(v_o, '{}'), v_n, p_path || '/additionalProperties');
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END IF;
        ELSIF v_key = 'enum' THEN
            IF v_n IS NULL THEN
                CONTINUE;  -- any value now: looser
            END IF;
            IF v_o IS NULL THEN
                RETURN format('%s/enum: added (values allowed before are now refused)', p_path);
            END IF;
            SELECT string_agg(e.value::text, ', ') INTO v_names
              FROM jsonb_array_elements(v_o) AS e
             WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_n) AS f WHERE f.value = e.value);
            IF v_names IS NOT NULL THEN
                RETURN format('%s/enum: %s removed', p_path, v_names);
            END IF;
        ELSIF v_key IN ('const', 'pattern', 'multipleOf') THEN
            IF v_n IS NOT NULL THEN
                RETURN format('%s/%s: %s', p_path, v_key, CASE WHEN v_o IS NULL THEN 'added' ELSE 'changed' END);
            END IF;
        ELSIF v_key = ANY (c_lower) THEN
            IF v_n IS NOT NULL AND (v_o IS NULL OR v_n::numeric > v_o::numeric) THEN
                RETURN format('%s/%s: tightened from %s to %s', p_path, v_key, coalesce(v_o::text, 'none'), v_n::text);
            END IF;
        ELSIF v_key = ANY (c_upper) THEN
            IF v_n IS NOT NULL AND (v_o IS NULL OR v_n::numeric < v_o::numeric) THEN
                RETURN format('%s/%s: tightened from %s to %s', p_path, v_key, coalesce(v_o::text, 'none'), v_n::text);
            END IF;
        ELSIF v_key = 'uniqueItems' THEN
            IF v_n = 'true'::jsonb THEN
                RETURN format('%s/uniqueItems: added', p_path);
            END IF;
        ELSIF v_key = 'items' THEN
            IF v_n IS NOT NULL THEN
                v_err := whk.jsonschema_breaking_change(coalesce(v_o, '{}'), v_n, p_path || '/items');
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END IF;
        ELSIF v_key IN ('$defs', 'definitions') THEN
            FOR v_names, v_o IN SELECT e.key, e.value FROM jsonb_each(coalesce(v_old -> v_key, '{}')) AS e LOOP
                IF NOT coalesce(v_new -> v_key ? v_names, false) THEN
                    RETURN format('%s/%s/%s: definition removed', p_path, v_key, v_names);
                END IF;
                v_err := whk.jsonschema_breaking_change(v_o, v_new -> v_key -> v_names,
                                                        p_path || '/' || v_key || '/' || v_names);
                IF v_err IS NOT NULL THEN
                    RETURN v_err;
                END IF;
            END LOOP;
        ELSIF v_key = 'format' THEN
            IF v_n IS NOT NULL THEN
                RETURN format('%s/format: %s', p_path, CASE WHEN v_o IS NULL THEN 'added' ELSE 'changed' END);
            END IF;
        ELSE
            -- allOf/anyOf/oneOf/not/if/then/else/$ref/prefixItems: compatibility cannot be proven here.
            RETURN format('%s/%s: changed (compatibility of %s cannot be checked: publish a new major)',
                          p_path, v_key, v_key);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.jsonschema_breaking_change(jsonb, jsonb, text) IS
    'NULL when a new schema is backward compatible with the old one (minor bump), else the first breaking change.';

-- ===== functions/validate_payload.sql
-- whk.validate_payload: check an event body (the envelope stored in whk.outbox.payload) against the
-- schema of its type and major version. NULL = valid, else '<JSON pointer>: <what is wrong>'.
-- The router calls it for non-strict types and stores the answer in outbox.valid / validation_error;
-- whk.emit calls it for strict types before writing anything. version NULL = the type's current major;
-- the latest minor of that major is used (minors are backward compatible by construction).
CREATE OR REPLACE FUNCTION whk.validate_payload(event_type text, version integer, payload jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type    text := validate_payload.event_type;
    p_version integer := validate_payload.version;
    v_schema  jsonb;
    v_major   integer;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RETURN '/: expected the envelope object {"type", "timestamp", "data"}';
    END IF;
    IF payload -> 'type' IS DISTINCT FROM to_jsonb(p_type) THEN
        RETURN format('/type: expected "%s", got %s', p_type, coalesce(payload -> 'type', 'nothing'));
    END IF;
    IF jsonb_typeof(payload -> 'timestamp') IS DISTINCT FROM 'string' THEN
        RETURN '/timestamp: expected an ISO 8601 string';
    END IF;
    IF NOT payload ? 'data' THEN
        RETURN '/: required property "data" is missing';
    END IF;

    SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RETURN format('/type: unknown event type "%s"', p_type);
    END IF;
    SELECT v.schema INTO v_schema
      FROM whk.whk_02_eventos_versoes v
      JOIN whk.whk_02_eventos e ON e.id = v.event_type_id
     WHERE e.name = p_type AND v.major = coalesce(p_version, v_major)
     ORDER BY v.minor DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN format('/type: "%s" has no version %s', p_type, coalesce(p_version, v_major));
    END IF;
    RETURN whk.jsonschema_error(v_schema, payload -> 'data', '/data');
END;
$$;
COMMENT ON FUNCTION whk.validate_payload(text, integer, jsonb) IS
    'NULL when an event envelope matches the schema of its type/major, else the first error (JSON pointer: message).';

-- ===== functions/wake_dispatchers.sql
-- whk.wake_dispatchers: the conditional, coalesced wake-up every outbox writer performs once per statement.
-- NOTIFY only while a live dispatcher has declared itself idle (whk.dispatcher_set_idle): NOTIFY takes a
-- cluster-wide lock at commit, so doing it on every commit serialises the ERP's commits. The payload is
-- constant, so all wake-ups of one transaction fold into a single notification at commit.
-- "Idle" is read from whk.dispatcher_idle_until (kept by the trigger whk.dispatchers_idle_refresh): a
-- live dispatcher is idle and its heartbeat is less than 60 s old. Generated capture triggers inline the
-- same test (see whk.capture_install) to save a function call.
CREATE OR REPLACE FUNCTION whk.wake_dispatchers()
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF pg_sequence_last_value('whk.dispatcher_idle_until'::regclass) > extract(epoch FROM now()) THEN
        PERFORM pg_notify('whk_outbox', '');
        RETURN true;
    END IF;
    RETURN false;
END;
$$;
COMMENT ON FUNCTION whk.wake_dispatchers() IS
    'NOTIFY whk_outbox if (and only if) a live dispatcher is idle; identical notifications fold per transaction.';

-- ===== functions/dispatcher_set_idle.sql
-- whk.dispatcher_set_idle: a dispatcher declares that it is about to sleep (idle) or busy again.
-- Capture triggers and whk.emit NOTIFY channel 'whk_outbox' only while some live dispatcher is idle, so
-- busy periods cost the ERP no NOTIFY at all (NOTIFY serialises commits cluster-wide). Protocol: LISTEN
-- first, set idle, then re-check the outbox before sleeping (a row committed in between is seen by that
-- check; polling every WHK_POLL_INTERVAL is the backstop). Returns false when no such dispatcher is
-- registered in whk.dispatchers. Also refreshes heartbeat_at: idle dispatchers whose heartbeat is older
-- than 60 s no longer count as idle (a crashed idle dispatcher must not make every commit notify).
CREATE OR REPLACE FUNCTION whk.dispatcher_set_idle(id text, idle boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    UPDATE whk.dispatchers AS d
       SET idle = dispatcher_set_idle.idle,
           heartbeat_at = now()
     WHERE d.id = dispatcher_set_idle.id;
    RETURN FOUND;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.dispatcher_set_idle(text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION whk.dispatcher_set_idle(text, boolean) IS
    'Declare a dispatcher idle (capture then NOTIFYs whk_outbox) or busy (no NOTIFY); false = unknown dispatcher.';

-- ===== functions/emit.sql
-- whk.emit: a custom event from any module, written to the outbox in the caller's transaction
-- (rollback = no event). payload is the event's `data`; the stored body is the Standard Webhooks
-- envelope {"type", "timestamp", "data"}. The returned uuid becomes the `webhook-id` header.
-- Strict types are validated here (an invalid payload raises, with a hint); others are validated by
-- the router, which flags invalid events (outbox.valid / validation_error) instead of dropping them.
-- deliver_at delays delivery (NULL = now). key orders events per entity for ordered webhooks.
CREATE OR REPLACE FUNCTION whk.emit(event_type text, payload jsonb, key text DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type     text := emit.event_type;
    v_major    integer;
    v_minor    integer;
    v_strict   boolean;
    v_id       uuid := gen_random_uuid();
    v_envelope jsonb;
    v_error    text;
BEGIN
    SELECT e.current_major, e.current_minor, e.strict INTO v_major, v_minor, v_strict
      FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'register it first: SELECT whk.register_event_type(''' || coalesce(p_type, 'module.thing_happened')
                         || ''', ''{"type": "object"}'', ''what it means'')';
    END IF;
    v_envelope := jsonb_build_object(
        'type', p_type,
        'timestamp', to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', coalesce(emit.payload, '{}'::jsonb));
    IF v_strict THEN
        v_error := whk.validate_payload(p_type, v_major, v_envelope);
        IF v_error IS NOT NULL THEN
            RAISE EXCEPTION 'invalid payload for strict event type % (version %.%): %', p_type, v_major, v_minor, v_error
                USING ERRCODE = 'check_violation',
                      DETAIL = v_error,
                      HINT = format('make the payload match the schema (SELECT schema FROM whk.whk_02_eventos_versoes v '
                                    'JOIN whk.whk_02_eventos e ON e.id = v.event_type_id WHERE e.name = %L '
                                    'ORDER BY major DESC, minor DESC LIMIT 1), or publish a compatible schema '
                                    'with whk.register_event_type', p_type);
        END IF;
    END IF;
    INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, payload, operation, deliver_at, valid)
    VALUES (v_id, p_type, v_major, emit.key, v_envelope, 'EMIT', emit.deliver_at, CASE WHEN v_strict THEN true END);
    PERFORM whk.wake_dispatchers();
    RETURN v_id;
END;
$$;
GRANT EXECUTE ON FUNCTION whk.emit(text, jsonb, text, timestamptz) TO PUBLIC;
COMMENT ON FUNCTION whk.emit(text, jsonb, text, timestamptz) IS
    'Emit a custom event in the caller''s transaction; returns its id (the webhook-id). Strict types are validated.';

-- ===== functions/system_health.sql
-- whk.system_health: a small snapshot of the capture side, used by system.health_check events.
CREATE OR REPLACE FUNCTION whk.system_health()
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT jsonb_build_object(
        'outbox_pending', (SELECT count(*) FROM whk.outbox WHERE status = 'pending'),
        'oldest_pending_s', (SELECT round(extract(epoch FROM now() - min(created_at))::numeric, 3)
                               FROM whk.outbox WHERE status = 'pending'),
        'dispatchers_live', (SELECT count(*) FROM whk.dispatchers
                              WHERE heartbeat_at > now() - interval '60 seconds' AND NOT stopping),
        'dispatchers_idle', (SELECT count(*) FROM whk.dispatchers
                              WHERE idle AND heartbeat_at > now() - interval '60 seconds'),
        'captured_tables', (SELECT count(*) FROM whk.capture_config));
$$;
COMMENT ON FUNCTION whk.system_health() IS 'Outbox backlog, live/idle dispatchers and captured tables as JSON.';

-- ===== functions/emit_system.sql
-- whk.emit_system: the platform's own events, system.startup | shutdown | health_check | backup_completed.
-- The dispatcher and the API call it when they start and stop; DBAs call it after a backup, e.g.
--   SELECT whk.emit_system('backup_completed', 'pg_basebackup', '{"label": "nightly", "bytes": 123}');
-- health_check with details NULL attaches whk.system_health() (outbox backlog, live dispatchers).
CREATE OR REPLACE FUNCTION whk.emit_system(kind text, component text DEFAULT 'database', details jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    IF kind IS NULL OR kind NOT IN ('startup', 'shutdown', 'health_check', 'backup_completed') THEN
        RAISE EXCEPTION 'unknown system event kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use startup, shutdown, health_check or backup_completed';
    END IF;
    RETURN whk.emit(
        'system.' || kind,
        jsonb_build_object(
            'component', coalesce(component, 'database'),
            'database', current_database(),
            'details', coalesce(details, CASE WHEN kind = 'health_check' THEN whk.system_health() END, '{}'::jsonb)),
        'system');
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.emit_system(text, text, jsonb) FROM PUBLIC;
COMMENT ON FUNCTION whk.emit_system(text, text, jsonb) IS
    'Emit system.startup|shutdown|health_check|backup_completed from a service or a DBA script.';

-- ===== functions/row_change.sql
-- whk.row_change: the `data` of a captured row event, {"op", "table", "new", "old", "changed"}, for
-- bindings that emit their own event types from row changes (see sql/demo/erp.sql) so that their
-- payloads look exactly like the ones whk.enable_capture writes. changed = the keys whose values differ
-- (sorted), for UPDATE only; NULL for INSERT and DELETE.
CREATE OR REPLACE FUNCTION whk.row_change(op text, tbl text, new jsonb, old jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'op', $1, 'table', $2, 'new', $3, 'old', $4,
        'changed', CASE WHEN $1 = 'UPDATE' THEN
            to_jsonb(ARRAY(SELECT e.key FROM jsonb_each($3) AS e
                            WHERE e.value IS DISTINCT FROM $4 -> e.key ORDER BY e.key)) END);
$$;
COMMENT ON FUNCTION whk.row_change(text, text, jsonb, jsonb) IS
    'The data object of a row event: {"op","table","new","old","changed"} (changed: UPDATE only).';

-- ===== functions/capture_data_schema.sql
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

-- ===== functions/register_event_type.sql
-- whk.register_event_type: add an event type to the catalog or publish a new schema version of it.
-- A new type starts at 1.0. For an existing type the schema is compared with the latest version of its
-- current major: identical = nothing new; backward compatible = next minor (1.0 -> 1.1); breaking =
-- refused unless new_major, which publishes (major + 1).0. Returns the resulting version 'major.minor'.
-- description / strict / category: NULL keeps what the type has (new types: '', false, the prefix).
CREATE OR REPLACE FUNCTION whk.register_event_type(
    event_type  text,
    schema      jsonb,
    description text DEFAULT NULL,
    strict      boolean DEFAULT NULL,
    new_major   boolean DEFAULT false,
    category    text DEFAULT NULL,
    changelog   text DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    -- Parameters keep the public names (named notation: new_major => true); the body uses these copies.
    p_event_type  text    := register_event_type.event_type;
    p_schema      jsonb   := register_event_type.schema;
    p_description text    := register_event_type.description;
    p_strict      boolean := register_event_type.strict;
    p_new_major   boolean := coalesce(register_event_type.new_major, false);
    p_category    text    := register_event_type.category;
    p_changelog   text    := register_event_type.changelog;
    v_type    whk.whk_02_eventos%ROWTYPE;
    v_latest  jsonb;
    v_problem text;
    v_break   text;
    v_major   integer;
    v_minor   integer;
BEGIN
    IF p_event_type IS NULL OR p_event_type !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        RAISE EXCEPTION 'invalid event type name %', coalesce(quote_literal(p_event_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use lowercase dotted names such as ''invoice.paid'' (letters, digits, _; at least one dot)';
    END IF;
    v_problem := whk.jsonschema_problem(p_schema);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'schema of % is not usable: %', p_event_type, v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'schemas are JSON Schema (draft 2020-12) objects using the subset listed in docs/capture.md';
    END IF;
    IF jsonb_typeof(p_schema) = 'boolean' THEN
        p_schema := CASE WHEN p_schema = 'true'::jsonb THEN '{}'::jsonb ELSE '{"not": {}}'::jsonb END;
    END IF;

    -- Concurrent registrations of one type serialise on its catalog row.
    INSERT INTO whk.whk_02_eventos (name, description, category, strict, current_major, current_minor)
    VALUES (p_event_type, coalesce(p_description, ''), coalesce(p_category, split_part(p_event_type, '.', 1)),
            coalesce(p_strict, false), 1, 0)
    ON CONFLICT (name) DO NOTHING;
    IF FOUND THEN
        SELECT * INTO v_type FROM whk.whk_02_eventos WHERE name = p_event_type;
        INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
        VALUES (v_type.id, 1, 0, p_schema, coalesce(p_changelog, 'initial version'));
        RETURN '1.0';
    END IF;

    SELECT * INTO v_type FROM whk.whk_02_eventos WHERE name = p_event_type FOR UPDATE;
    SELECT v.schema INTO v_latest
      FROM whk.whk_02_eventos_versoes v
     WHERE v.event_type_id = v_type.id AND v.major = v_type.current_major AND v.minor = v_type.current_minor;

    v_major := v_type.current_major;
    v_minor := v_type.current_minor;
    IF p_new_major THEN
        v_major := v_major + 1;
        v_minor := 0;
    ELSIF v_latest IS DISTINCT FROM p_schema THEN
        v_break := whk.jsonschema_breaking_change(v_latest, p_schema);
        IF v_break IS NOT NULL THEN
            RAISE EXCEPTION 'breaking schema change for % in major version %: %', p_event_type, v_major, v_break
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'within a major version a schema may only change in backward compatible ways '
                               '(new optional properties, new enum values, looser bounds)',
                      HINT = format('keep version %s.%s compatible, or publish version %s.0 with '
                                    'SELECT whk.register_event_type(%L, <schema>, new_major => true)',
                                    v_major, v_minor, v_major + 1, p_event_type);
        END IF;
        v_minor := v_minor + 1;
    END IF;

    IF (v_major, v_minor) <> (v_type.current_major, v_type.current_minor) THEN
        INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
        VALUES (v_type.id, v_major, v_minor, p_schema,
                coalesce(p_changelog, CASE WHEN v_minor = 0 THEN 'breaking change' ELSE 'backward compatible change' END));
    END IF;
    UPDATE whk.whk_02_eventos
       SET current_major = v_major,
           current_minor = v_minor,
           description = coalesce(p_description, description),
           strict = coalesce(p_strict, strict),
           category = coalesce(p_category, category),
           updated_at = now()
     WHERE id = v_type.id;

    IF v_major <> v_type.current_major THEN
        -- Capture triggers carry the major of their types baked in: regenerate the affected ones.
        PERFORM whk.capture_install(c.tbl)
           FROM whk.capture_config c
          WHERE p_event_type IN (c.event_prefix || '.created', c.event_prefix || '.updated', c.event_prefix || '.deleted');
    END IF;
    RETURN v_major || '.' || v_minor;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text) FROM PUBLIC;
COMMENT ON FUNCTION whk.register_event_type(text, jsonb, text, boolean, boolean, text, text) IS
    'Register an event type or a new schema version: compatible = minor bump, breaking = refused unless new_major.';

-- ===== functions/capture_install.sql
-- whk.capture_install: (re)generate the capture trigger function of one table from whk.capture_config and
-- (re)attach its statement-level triggers. Called by whk.enable_capture and, when a captured event type
-- gets a new major version, by whk.register_event_type.
--
-- Why a generated function per table instead of one generic function: PL/pgSQL caches the plan of static
-- SQL, while a generic function would plan dynamic SQL (EXECUTE) on every ERP statement. The generated
-- function reads only the statement's transition tables (no lookups, no catalog access) and writes every
-- event of the statement with one INSERT ... SELECT. It is SECURITY DEFINER, owned by the owner of schema
-- whk, with search_path pinned to pg_catalog: ERP roles need no privilege on whk.
--
-- Foreseeable ERP values cannot make it fail: rows become JSON with to_jsonb (numeric NaN -> "NaN",
-- infinity timestamps -> "infinity", bytea -> "\x..", any size up to jsonb's 255 MB limit), changes are
-- detected by comparing those JSON values (no dependence on the column types' equality operators), and
-- the key is read from the JSON too. Only a user-supplied `condition` references columns directly; it is
-- checked by whk.enable_capture before anything is generated.
CREATE OR REPLACE FUNCTION whk.capture_install(tbl regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $install$
#variable_conflict use_column
DECLARE
    p_tbl     regclass := capture_install.tbl;
    c         whk.capture_config%ROWTYPE;
    v_table   text;
    v_owner   text;
    v_cols    text := '';
    v_key     text;
    v_alias   text;
    v_body    text;
    v_head    text;
    v_ins     text := 'RETURN NULL';
    v_upd     text := 'RETURN NULL';
    v_del     text := 'RETURN NULL';
    v_filter  text;
    v_op      text;
    v_type    text;
    v_major   integer;
    v_fn      text;
BEGIN
    SELECT * INTO c FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not captured', p_tbl
            USING ERRCODE = 'undefined_object', HINT = 'call whk.enable_capture first';
    END IF;
    SELECT n.nspname || '.' || r.relname INTO v_table
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    IF c.condition IS NOT NULL THEN
        v_cols := ', whk_row.*';
    END IF;

    -- The event key, read from the row's JSON (%s = a jsonb expression of the row): one column as text,
    -- several as a JSON array. Reading it from the JSON keeps working (as NULL) if the column is renamed.
    IF cardinality(c.key_columns) = 1 THEN
        v_key := format('(%%s) ->> %L', c.key_columns[1]);
    ELSIF cardinality(c.key_columns) > 1 THEN
        v_key := format('jsonb_build_array(%s)::text',
                        (SELECT string_agg(format('(%%s) -> %L', k), ', ') FROM unnest(c.key_columns) AS k));
    ELSE
        v_key := 'NULL';
    END IF;

    FOREACH v_op IN ARRAY c.operations LOOP
        v_type := c.event_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated'
                                              ELSE '.deleted' END;
        SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = v_type;
        v_head := E'INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, payload, source_table, operation)'
                  || format(E'\n        SELECT gen_random_uuid(), %L, %s, ', v_type, coalesce(v_major, 1));
        IF v_op IN ('INSERT', 'DELETE') THEN
            -- One row image. The envelope is a constant template (type, op, table) completed per statement
            -- with the timestamp and per row with the row's JSON: jsonb_set on a template costs about half
            -- of building the nested objects with jsonb_build_object on every row (PostgreSQL 15).
            v_alias := CASE v_op WHEN 'INSERT' THEN 'new' ELSE 'old' END;
            v_body := format(
                    E'v_tpl := jsonb_set(%L::jsonb, ''{timestamp}'', to_jsonb(v_ts));\n        ',
                    jsonb_build_object('type', v_type, 'timestamp', NULL, 'data',
                                       jsonb_build_object('op', v_op, 'table', v_table, 'new', NULL, 'old', NULL,
                                                          'changed', NULL))::text)
                || v_head
                || replace(v_key, '%s', v_alias || '.whk_j') || ','
                || format(E'\n               jsonb_set(v_tpl, %L, %s.whk_j),', '{data,' || v_alias || '}', v_alias)
                || format(E'\n               %L, %L', v_table, v_op)
                || format(E'\n        FROM (SELECT to_jsonb(whk_row) AS whk_j%s FROM %s AS whk_row) AS %s',
                          v_cols, CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END, v_alias)
                || CASE WHEN c.condition IS NOT NULL THEN
                       format(E'\n        LEFT JOIN (SELECT whk_row.* FROM %s AS whk_row) AS %s ON false',
                              CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END,
                              CASE v_op WHEN 'INSERT' THEN 'old' ELSE 'new' END)
                       || E'\n        WHERE (' || c.condition || ')' ELSE '' END;
            IF v_op = 'INSERT' THEN
                v_ins := v_body;
            ELSE
                v_del := v_body;
            END IF;
        ELSE
            -- Old and new transition rows are paired by position: PostgreSQL appends both images of an
            -- updated row together, so the n-th old row and the n-th new row are the same row (this also
            -- holds when the update changes the primary key). Changes are found by comparing the rows' JSON,
            -- which works for every column type (point, xml, json have no equality operator).
            v_filter := 'whk_c.whk_changed <> ''{}''';
            IF c.columns IS NOT NULL THEN
                v_filter := v_filter || format(' AND whk_c.whk_changed && %L::text[]', c.columns);
            END IF;
            IF c.condition IS NOT NULL THEN
                v_filter := v_filter || E'\n          AND (' || c.condition || ')';
            END IF;
            v_upd := format(
                    E'v_tpl := jsonb_set(%L::jsonb, ''{timestamp}'', to_jsonb(v_ts));\n        ',
                    jsonb_build_object('type', v_type, 'timestamp', NULL, 'data',
                                       jsonb_build_object('op', 'UPDATE', 'table', v_table, 'new', NULL,
                                                          'old', NULL, 'changed', NULL))::text)
                || v_head
                || replace(v_key, '%s', 'new.whk_j') || ','
                || E'\n               jsonb_set(jsonb_set(jsonb_set(v_tpl, ''{data,changed}'', to_jsonb(whk_c.whk_changed)),'
                || E'\n                                   ''{data,old}'', old.whk_j), ''{data,new}'', new.whk_j),'
                || format(E'\n               %L, ''UPDATE''', v_table)
                || format(E'\n        FROM (SELECT row_number() OVER () AS whk_rn, to_jsonb(whk_row) AS whk_j%s FROM whk_new AS whk_row) AS new', v_cols)
                || format(E'\n        JOIN (SELECT row_number() OVER () AS whk_rn, to_jsonb(whk_row) AS whk_j%s FROM whk_old AS whk_row) AS old', v_cols)
                || E'\n          ON old.whk_rn = new.whk_rn'
                || E'\n        CROSS JOIN LATERAL (SELECT ARRAY(SELECT e.key FROM jsonb_each(new.whk_j) AS e'
                || E'\n                                          WHERE e.value IS DISTINCT FROM old.whk_j -> e.key'
                || E'\n                                          ORDER BY e.key) AS whk_changed) AS whk_c'
                || E'\n        WHERE ' || v_filter;
        END IF;
    END LOOP;

    v_fn := format('whk.%I()', c.function_name);
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %s
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $whk_capture$
#variable_conflict use_column
-- Generated by whk.enable_capture for %s (prefix %s). Do not edit: call whk.enable_capture again.
DECLARE
    v_rows bigint;
    v_tpl  jsonb;
    v_ts   text := to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    IF TG_OP = 'INSERT' THEN
        %s;
    ELSIF TG_OP = 'UPDATE' THEN
        %s;
    ELSE
        %s;
    END IF;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    -- The wake-up of whk.wake_dispatchers, inlined: at most one NOTIFY per statement, only while a live
    -- dispatcher is idle (a function call, not a query); identical notifications fold per transaction.
    IF v_rows > 0 AND pg_sequence_last_value('whk.dispatcher_idle_until'::regclass) > extract(epoch FROM now()) THEN
        PERFORM pg_notify('whk_outbox', '');
    END IF;
    RETURN NULL;
END;
$whk_capture$$f$, v_fn, v_table, c.event_prefix, v_ins, v_upd, v_del);
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_fn,
                   format('Capture trigger of %s (events %s.*), generated by whk.enable_capture.', v_table, c.event_prefix));

    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';
    IF v_owner <> current_user THEN
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_fn, v_owner);
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);

    -- Create the missing triggers of the captured operations, drop the others (quietly: only those that
    -- exist). A trigger already calling this function is left alone: CREATE OR REPLACE FUNCTION kept its
    -- identity, so regenerating for a new event major needs no privilege on the ERP table.
    FOR v_op, v_type IN SELECT o.op, o.trg
                          FROM (VALUES ('INSERT', 'whk_capture_insert'), ('UPDATE', 'whk_capture_update'),
                                       ('DELETE', 'whk_capture_delete')) AS o(op, trg) LOOP
        IF v_op = ANY (c.operations) AND EXISTS (
               SELECT 1 FROM pg_trigger t
                WHERE t.tgrelid = p_tbl AND t.tgname = v_type AND t.tgfoid = v_fn::regprocedure) THEN
            CONTINUE;
        ELSIF v_op = ANY (c.operations) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                           'EXECUTE FUNCTION %s',
                           v_type, v_op, p_tbl,
                           CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                     WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                     ELSE 'OLD TABLE AS whk_old' END,
                           v_fn);
        ELSIF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p_tbl AND t.tgname = v_type) THEN
            EXECUTE format('DROP TRIGGER %I ON %s', v_type, p_tbl);
        END IF;
    END LOOP;
    RETURN c.function_name;
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_install(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_install(regclass) IS
    'Regenerate the capture trigger function and triggers of a table from whk.capture_config.';

-- ===== functions/enable_capture.sql
-- whk.enable_capture: every committed INSERT/UPDATE/DELETE on an ERP table becomes an outbox event of type
-- <event_prefix>.created|updated|deleted, written in the ERP's own transaction by statement-level AFTER
-- triggers (one INSERT ... SELECT per statement, whatever the number of rows).
--   key_column  entity key for ordering (NULL = the primary key; a composite key becomes a JSON array)
--   columns     listened columns: an UPDATE emits only when one of them really changed (NULL = any);
--               an UPDATE that changes nothing never emits
--   condition   SQL boolean over `new` and `old` (the row images; on INSERT every column of old is NULL,
--               on DELETE every column of new is NULL); rows for which it is not true write nothing
--   operations  which of INSERT/UPDATE/DELETE to capture (default all three)
-- Idempotent: calling it again with the same arguments changes nothing; with other arguments it replaces
-- the table's capture settings. Event types missing from the catalog are registered with a schema derived
-- from the table's columns (whk.capture_data_schema). Returns true when triggers were (re)generated, false
-- when the table was already captured with exactly these settings. Runs with the caller's rights: the caller needs the
-- TRIGGER privilege on the table and must be (a member of) the owner of schema whk.
CREATE OR REPLACE FUNCTION whk.enable_capture(
    tbl          regclass,
    event_prefix text,
    key_column   text DEFAULT NULL,
    columns      text[] DEFAULT NULL,
    condition    text DEFAULT NULL,
    operations   text[] DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE']
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_tbl     regclass := enable_capture.tbl;
    p_prefix  text := enable_capture.event_prefix;
    p_key     text := nullif(enable_capture.key_column, '');
    p_columns text[] := enable_capture.columns;
    p_cond    text := nullif(btrim(enable_capture.condition), '');
    p_ops     text[] := ARRAY(SELECT DISTINCT upper(o) FROM unnest(enable_capture.operations) AS o ORDER BY 1);
    v_kind    "char";
    v_nsp     text;
    v_rel     text;
    v_keys    text[];
    v_missing text;
    v_fn      text;
    v_other   regclass;
    v_op      text;
    v_type    text;
    v_old     whk.capture_config%ROWTYPE;
BEGIN
    IF p_tbl IS NULL THEN
        RAISE EXCEPTION 'enable_capture needs a table' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.relkind, n.nspname, r.relname INTO v_kind, v_nsp, v_rel
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', p_tbl
            USING ERRCODE = 'wrong_object_type', HINT = 'capture the table a view or foreign table reads from';
    END IF;
    IF v_nsp IN ('whk', 'pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'tables of schema % cannot be captured', v_nsp USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_prefix IS NULL OR p_prefix !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' THEN
        RAISE EXCEPTION 'invalid event prefix %', coalesce(quote_literal(p_prefix), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use a lowercase dotted name such as ''order'' or ''sales.invoice'' (events become <prefix>.created|updated|deleted)';
    END IF;
    SELECT cc.tbl INTO v_other FROM whk.capture_config cc WHERE cc.event_prefix = p_prefix AND cc.tbl <> p_tbl;
    IF FOUND THEN
        RAISE EXCEPTION 'event prefix % is already used by table %', p_prefix, v_other
            USING ERRCODE = 'unique_violation', HINT = 'each captured table needs its own prefix';
    END IF;
    IF cardinality(p_ops) = 0 OR NOT p_ops <@ ARRAY['DELETE', 'INSERT', 'UPDATE'] THEN
        RAISE EXCEPTION 'invalid operations %', enable_capture.operations
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use a non-empty subset of {INSERT,UPDATE,DELETE}';
    END IF;

    -- Key: the given column, else the primary key.
    IF p_key IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname = p_key
                        AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in %', quote_ident(p_key), p_tbl
                USING ERRCODE = 'undefined_column';
        END IF;
        v_keys := ARRAY[p_key];
    ELSE
        SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}') INTO v_keys
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = p_tbl AND i.indisprimary;
    END IF;

    IF p_columns IS NOT NULL THEN
        SELECT string_agg(quote_ident(col), ', ') INTO v_missing
          FROM unnest(p_columns) AS col
         WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname = col
                            AND a.attnum > 0 AND NOT a.attisdropped);
        IF v_missing IS NOT NULL OR cardinality(p_columns) = 0 THEN
            RAISE EXCEPTION 'listened columns must be existing columns of %: % not found', p_tbl,
                coalesce(v_missing, 'empty list')
                USING ERRCODE = 'undefined_column', HINT = 'pass NULL to listen to every column';
        END IF;
        p_columns := ARRAY(SELECT DISTINCT col FROM unnest(p_columns) AS col ORDER BY 1);
    END IF;

    IF p_cond IS NOT NULL THEN
        -- The condition is pasted into the generated trigger, so it must be one expression over new/old.
        IF strpos(p_cond, ';') > 0 OR strpos(p_cond, '$whk_capture$') > 0 THEN
            RAISE EXCEPTION 'the capture condition must be a single SQL expression (no ";")'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname IN ('whk_j', 'whk_rn')
                    AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'a condition cannot be used on % because it has a column named whk_j or whk_rn', p_tbl
                USING ERRCODE = 'duplicate_column';
        END IF;
        BEGIN
            EXECUTE format('SELECT (%s)::boolean FROM %s AS new, %s AS old LIMIT 0', p_cond, p_tbl, p_tbl);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'invalid capture condition for %: %', p_tbl, SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'write a boolean SQL expression over new.<column> and old.<column>, e.g. new.total > 100';
        END;
    END IF;

    SELECT * INTO v_old FROM whk.capture_config cc WHERE cc.tbl = p_tbl;
    v_fn := coalesce(v_old.function_name,
                     CASE WHEN length('capture_' || v_nsp || '_' || v_rel) <= 50
                               AND NOT EXISTS (SELECT 1 FROM whk.capture_config cc
                                               WHERE cc.function_name = 'capture_' || v_nsp || '_' || v_rel)
                          THEN 'capture_' || v_nsp || '_' || v_rel
                          ELSE 'capture_' || left(v_rel, 40) || '_' || p_tbl::oid END);

    -- Register the event types the catalog does not know yet (known ones keep their schema).
    FOREACH v_op IN ARRAY p_ops LOOP
        v_type := p_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END;
        IF NOT EXISTS (SELECT 1 FROM whk.whk_02_eventos e WHERE e.name = v_type) THEN
            PERFORM whk.register_event_type(
                v_type, whk.capture_data_schema(p_tbl, v_op),
                description => format('Row %s in %s.%s (captured by whk.enable_capture).',
                                      CASE v_op WHEN 'INSERT' THEN 'inserted' WHEN 'UPDATE' THEN 'updated'
                                                ELSE 'deleted' END, v_nsp, v_rel),
                category => 'capture');
        END IF;
    END LOOP;

    IF v_old.tbl IS NOT NULL
       AND (v_old.event_prefix, v_old.key_column, v_old.key_columns, v_old.columns, v_old.condition, v_old.operations)
           IS NOT DISTINCT FROM (p_prefix, p_key, v_keys, p_columns, p_cond, p_ops)
       AND (SELECT ct.active FROM whk.captured_tables ct WHERE ct.tbl = p_tbl) THEN
        -- Same settings and the triggers are in place: nothing to do (enable_capture is idempotent).
        RETURN false;
    END IF;

    INSERT INTO whk.capture_config AS cc (tbl, event_prefix, key_column, key_columns, columns, condition,
                                          operations, function_name)
    VALUES (p_tbl, p_prefix, p_key, v_keys, p_columns, p_cond, p_ops, v_fn)
    ON CONFLICT (tbl) DO UPDATE
       SET event_prefix = excluded.event_prefix, key_column = excluded.key_column,
           key_columns = excluded.key_columns, columns = excluded.columns, condition = excluded.condition,
           operations = excluded.operations, enabled_at = now(), enabled_by = current_user;
    PERFORM whk.capture_install(p_tbl);
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.enable_capture(regclass, text, text, text[], text, text[]) FROM PUBLIC;
COMMENT ON FUNCTION whk.enable_capture(regclass, text, text, text[], text, text[]) IS
    'Capture INSERT/UPDATE/DELETE of a table as <prefix>.created|updated|deleted outbox events (idempotent).';

-- ===== functions/disable_capture.sql
-- whk.disable_capture: stop capturing a table. Drops its three triggers and its generated function and
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
BEGIN
    DELETE FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl RETURNING cc.function_name INTO v_fn;
    IF v_fn IS NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class r WHERE r.oid = p_tbl) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_insert ON %s', p_tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_update ON %s', p_tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS whk_capture_delete ON %s', p_tbl);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS whk.%I()', v_fn);
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.disable_capture(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.disable_capture(regclass) IS
    'Stop capturing a table: drop its triggers and generated function; queued events stay.';

-- ===== functions/outbox_create_partitions.sql
-- whk.outbox_create_partitions: make sure whk.outbox has one partition per day (or week/month) from the
-- current period up to `ahead` from now, named outbox_pYYYYMMDD after the period's first day. Run it daily
-- (cron, pg_cron, or the dispatcher's maintenance loop); it is idempotent and returns the partitions it
-- created. Rows that landed in outbox_default for a period (partitions created late) are moved into the
-- new partition in the same transaction, keeping their ids, so nothing is lost or duplicated.
-- Creating a partition briefly takes an ACCESS EXCLUSIVE lock on whk.outbox (ERP inserts wait a moment):
-- creating them ahead of time keeps the default partition empty and this instantaneous.
CREATE OR REPLACE FUNCTION whk.outbox_create_partitions(ahead interval DEFAULT '7 days', period text DEFAULT 'day')
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_step  interval;
    v_from  timestamptz;
    v_to    timestamptz;
    v_name  text;
    v_moved bigint;
BEGIN
    IF period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'invalid partition period %', quote_literal(period)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use day, week or month';
    END IF;
    v_step := ('1 ' || period)::interval;
    -- Periods are aligned in UTC so the partition bounds do not depend on the session time zone.
    v_from := date_trunc(period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE v_from <= now() + ahead LOOP
        v_to := ((v_from AT TIME ZONE 'UTC') + v_step) AT TIME ZONE 'UTC';
        v_name := 'outbox_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
        -- Skip periods already covered by any partition (whatever its name or size).
        IF NOT EXISTS (SELECT 1 FROM whk.outbox_partitions p
                        WHERE NOT p.is_default AND p.range_from < v_to AND p.range_to > v_from) THEN
            LOCK TABLE whk.outbox IN ACCESS EXCLUSIVE MODE;
            CREATE TEMP TABLE IF NOT EXISTS whk_outbox_moving (LIKE whk.outbox) ON COMMIT DROP;
            TRUNCATE whk_outbox_moving;
            WITH moved AS (
                DELETE FROM whk.outbox_default WHERE created_at >= v_from AND created_at < v_to RETURNING *
            )
            INSERT INTO whk_outbox_moving SELECT * FROM moved;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            EXECUTE format('CREATE TABLE whk.%I PARTITION OF whk.outbox FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_from, v_to);
            IF v_moved > 0 THEN
                INSERT INTO whk.outbox OVERRIDING SYSTEM VALUE SELECT * FROM whk_outbox_moving;
            END IF;
            RETURN NEXT v_name;
        END IF;
        v_from := v_to;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) FROM PUBLIC;
COMMENT ON FUNCTION whk.outbox_create_partitions(interval, text) IS
    'Create outbox partitions (day/week/month) up to now() + ahead; moves stray rows out of outbox_default.';

-- ===== functions/outbox_drop_partitions.sql
-- whk.outbox_drop_partitions: retention. Drops outbox partitions whose whole period ended more than
-- older_than ago, but only those that hold no work: a partition is kept while any of its events is still
-- pending (not routed yet), is flagged invalid (waiting for an operator; unless keep_invalid is false),
-- or has a delivery that is not finished (pending, in_flight, awaiting_ack, parked) or was dead-lettered
-- (dead letters keep their event for inspection and replay; cancel or purge them to release it).
-- One row per old partition says what happened. The partition is locked before it is checked, so a
-- transaction reading its events (a replay) finishes first, and deliveries are locked against changes
-- for the moment of the check. lock_timeout bounds the wait; a busy partition is simply kept this time.
-- The default partition is never dropped.
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
                                                      keep_invalid boolean DEFAULT true)
RETURNS TABLE (partition_name text, dropped boolean, reason text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
SET lock_timeout = '5s'
AS $$
#variable_conflict use_column
DECLARE
    v_part  regclass;
    v_from  timestamptz;
    v_to    timestamptz;
    v_why   text;
BEGIN
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.outbox_partitions p
         WHERE NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        BEGIN
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
            LOCK TABLE whk.whk_03_entregas IN SHARE MODE;
            EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %1$s WHERE status = ''pending'') THEN ''pending events'''
                           '            WHEN $1 AND EXISTS (SELECT 1 FROM %1$s WHERE status = ''invalid'') THEN ''invalid events'' END',
                           v_part)
               INTO v_why USING keep_invalid;
            IF v_why IS NULL THEN
                SELECT CASE WHEN d.status = 'dead' THEN 'dead-lettered deliveries' ELSE 'unfinished deliveries' END
                  INTO v_why
                  FROM whk.whk_03_entregas d
                 WHERE d.status IN ('pending', 'in_flight', 'awaiting_ack', 'parked', 'dead')
                   AND d.event_created_at >= v_from AND d.event_created_at < v_to
                 ORDER BY d.status = 'dead'
                 LIMIT 1;
            END IF;
            IF v_why IS NULL THEN
                EXECUTE format('ALTER TABLE whk.outbox DETACH PARTITION %s', v_part);
                EXECUTE format('DROP TABLE %s', v_part);
                dropped := true;
                reason := format('events from %s to %s removed', v_from, v_to);
            ELSE
                dropped := false;
                reason := 'kept: ' || v_why;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            dropped := false;
            reason := 'kept: busy (lock timeout), try again later';
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean) FROM PUBLIC;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished or dead-lettered deliveries.';

-- ===== triggers/dispatchers_idle_refresh.sql
-- whk.dispatchers_idle_refresh: keep whk.dispatcher_idle_until equal to "max(heartbeat_at) + 60 s over idle
-- dispatchers" (0 when none) after every change of whk.dispatchers: whk.dispatcher_set_idle, the
-- dispatchers' own heartbeats and their removal all go through it, so capture triggers can test idleness
-- without a query. Refreshes are serialised by an advisory lock held to commit, so each one computes from
-- everything committed before it and the last committer's value stands. setval is not transactional: a
-- rolled back change can leave the cache stale until the next change (at worst a spurious NOTIFY, or a
-- missed one that the dispatcher's polling covers).
CREATE OR REPLACE FUNCTION whk.dispatchers_idle_refresh()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('whk.dispatcher_idle_until'));
    PERFORM setval('whk.dispatcher_idle_until',
                   coalesce((SELECT ceil(extract(epoch FROM max(d.heartbeat_at)))::bigint + 60
                               FROM whk.dispatchers d WHERE d.idle), 0));
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.dispatchers_idle_refresh() IS
    'Trigger: recompute whk.dispatcher_idle_until (idle dispatchers'' max heartbeat + 60 s) after dispatchers change.';

CREATE TRIGGER dispatchers_idle_refresh
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON whk.dispatchers
    FOR EACH STATEMENT EXECUTE FUNCTION whk.dispatchers_idle_refresh();

-- The cache starts right for dispatchers registered before this migration.
UPDATE whk.dispatchers SET idle = idle;

COMMIT;
