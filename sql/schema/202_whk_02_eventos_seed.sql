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
