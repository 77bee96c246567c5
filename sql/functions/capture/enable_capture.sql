-- whk.enable_capture: every committed INSERT/UPDATE/DELETE on an ERP table becomes an outbox event of type
-- <event_prefix>.created|updated|deleted, written in the ERP's own transaction by statement-level AFTER
-- triggers (one INSERT ... SELECT per statement, whatever the number of rows).
--   key_column  entity key for ordering (NULL = the primary key; a composite key becomes a JSON array)
--   columns     listened columns: an UPDATE emits only when one of them really changed (NULL = any);
--               an UPDATE that changes nothing never emits
--   condition   SQL boolean over `new` and `old` (the row images; on INSERT every column of old is NULL,
--               on DELETE every column of new is NULL); rows for which it is not true write nothing
--   operations  which of INSERT/UPDATE/DELETE to capture (default all three)
--   aggregate   NULL (default): one event per row. Otherwise the table is an aggregate root: the rows of
--               one transaction that share its key (its own row, and the rows of the child tables listed
--               as 'schema.table.column', the column holding the root's key) become ONE event at commit,
--               with each child's rows nested in `new` under the child table's name ('{}' = coalescing
--               the root's own writes, no children). See whk.capture_aggregate_install and docs/capture.md.
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
    operations   text[] DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE'],
    aggregate    text[] DEFAULT NULL
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
    p_agg     text[];
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

    IF enable_capture.aggregate IS NOT NULL THEN
        p_agg := whk.capture_aggregate_check(p_tbl, p_prefix, v_keys, p_cond, enable_capture.aggregate);
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
       AND (v_old.event_prefix, v_old.key_column, v_old.key_columns, v_old.columns, v_old.condition, v_old.operations,
            v_old.aggregate)
           IS NOT DISTINCT FROM (p_prefix, p_key, v_keys, p_columns, p_cond, p_ops, p_agg)
       AND (SELECT ct.active FROM whk.captured_tables ct WHERE ct.tbl = p_tbl) THEN
        -- Same settings and the triggers are in place: nothing to do (enable_capture is idempotent).
        RETURN false;
    END IF;

    IF v_old.aggregate IS NOT NULL THEN
        -- Children no longer listed lose their staging triggers; back to per-row capture, the flush goes.
        PERFORM whk.capture_aggregate_uninstall(
            ARRAY(SELECT a FROM unnest(v_old.aggregate) AS a WHERE p_agg IS NULL OR NOT a = ANY (p_agg)),
            CASE WHEN p_agg IS NULL THEN v_fn END);
        -- What this transaction staged under the old settings is not flushed: it must not outlive it.
        DELETE FROM whk.capture_aggregate_pending AS p
         WHERE p.txid = pg_current_xact_id() AND p.aggregate = v_old.event_prefix;
    END IF;
    INSERT INTO whk.capture_config AS cc (tbl, event_prefix, key_column, key_columns, columns, condition,
                                          operations, function_name, aggregate)
    VALUES (p_tbl, p_prefix, p_key, v_keys, p_columns, p_cond, p_ops, v_fn, p_agg)
    ON CONFLICT (tbl) DO UPDATE
       SET event_prefix = excluded.event_prefix, key_column = excluded.key_column,
           key_columns = excluded.key_columns, columns = excluded.columns, condition = excluded.condition,
           operations = excluded.operations, aggregate = excluded.aggregate, enabled_at = now(),
           enabled_by = current_user;
    PERFORM whk.capture_install(p_tbl);
    RETURN true;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.enable_capture(regclass, text, text, text[], text, text[], text[]) FROM PUBLIC;
COMMENT ON FUNCTION whk.enable_capture(regclass, text, text, text[], text, text[], text[]) IS
    'Capture INSERT/UPDATE/DELETE of a table as <prefix>.created|updated|deleted outbox events, per row or per aggregate (idempotent).';
