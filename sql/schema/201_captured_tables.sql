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
       -- false when someone dropped or disabled a capture trigger behind WHK's back. An aggregate root
       -- has all three (its deletes and inserts decide the event type even when not emitted).
       (SELECT count(*) FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = c.tbl AND t.tgenabled <> 'D'
           AND t.tgname IN ('whk_capture_insert', 'whk_capture_update', 'whk_capture_delete'))
           = CASE WHEN c.aggregate IS NULL THEN cardinality(c.operations) ELSE 3 END AS active,
       c.enabled_at,
       c.enabled_by,
       c.aggregate
FROM whk.capture_config c
LEFT JOIN pg_catalog.pg_class r ON r.oid = c.tbl
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace;
COMMENT ON VIEW whk.captured_tables IS 'Captured ERP tables, their event types and settings (see docs/capture.md).';
