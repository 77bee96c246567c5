-- whk.capture_install: (re)generate the capture trigger functions of one table from whk.capture_config
-- (one per captured operation: <function_name>_ins, _upd, _del) and (re)attach its statement-level
-- triggers; a table captured as an aggregate root is handed to whk.capture_aggregate_install. Called by whk.enable_capture and, when a captured event type gets a new major version, by
-- whk.register_event_type.
--
-- Why a generated function per table instead of one generic function: PL/pgSQL caches the plan of static
-- SQL, while a generic function would plan dynamic SQL (EXECUTE) on every ERP statement. The generated
-- function reads only the statement's transition tables (no lookups, no catalog access) and writes every
-- event of the statement with one INSERT ... SELECT. It is SECURITY DEFINER, owned by the owner of schema
-- whk: ERP roles need no privilege on whk.
--
-- Its names cannot be hijacked through the caller's search_path: every function, operator and type in the
-- generated code is schema-qualified (pg_catalog.to_jsonb, OPERATOR(pg_catalog.->>), ::pg_catalog.text,
-- whk.outbox) and the transition tables are resolved before any schema. That pins resolution without a
-- `SET search_path` clause, which costs every ERP statement ~10 us (the GUC save/restore around each call
-- and the search-path recomputation; measured, migration 0015: 8% of a single-row INSERT's commit). Only a
-- user-supplied `condition` is SQL we do not write; a function that carries one keeps
-- `SET search_path = pg_catalog, pg_temp`. No other SET clause either: any clause makes every call save and
-- restore the GUC state (`SET jit = off` alone measured ~7 us per statement, migration 0017). The plan
-- shapes that need no setting: INSERT and DELETE read one transition table (linear at any size), and an
-- UPDATE's old/new join is kept off the session's cached plan past 8 rows (below). Left: a cached INSERT or
-- DELETE plan whose first execution had millions of rows could be JIT-compiled at every later execution.
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
    v_ins     text;
    v_upd     text;
    v_del     text;
    v_filter  text;
    v_op      text;
    v_type    text;
    v_major   integer;
    v_fn      text;
    v_stmt    text;
    v_numbered text;
    v_sfx     text;
BEGIN
    SELECT * INTO c FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not captured', p_tbl
            USING ERRCODE = 'undefined_object', HINT = 'call whk.enable_capture first';
    END IF;
    IF c.aggregate IS NOT NULL THEN
        -- One event per aggregate and transaction, written at commit: another mechanism entirely.
        RETURN whk.capture_aggregate_install(p_tbl);
    END IF;
    SELECT n.nspname || '.' || r.relname INTO v_table
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    IF c.condition IS NOT NULL THEN
        v_cols := ', whk_row.*';
    END IF;

    -- The event key, read from the row's JSON (%s = a jsonb expression of the row): one column as text,
    -- several as a JSON array. Reading it from the JSON keeps working (as NULL) if the column is renamed.
    IF cardinality(c.key_columns) = 1 THEN
        v_key := format('(%%s) OPERATOR(pg_catalog.->>) %L', c.key_columns[1]);
    ELSIF cardinality(c.key_columns) > 1 THEN
        v_key := format('pg_catalog.jsonb_build_array(%s)::pg_catalog.text',
                        (SELECT string_agg(format('(%%s) OPERATOR(pg_catalog.->) %L', k), ', ')
                           FROM unnest(c.key_columns) AS k));
    ELSE
        v_key := 'NULL';
    END IF;

    FOREACH v_op IN ARRAY c.operations LOOP
        v_type := c.event_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated'
                                              ELSE '.deleted' END;
        SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = v_type;
        -- Only what varies per row is written (migration 0013): the row image(s) and the key, plus constants.
        -- The envelope {"type", "timestamp", "data"} is rebuilt by whk.event_envelope when the event is read,
        -- so an INSERT writes no more per row than the bare outbox trigger (to_jsonb(row), key, constants).
        -- All of it lives inside the one INSERT: each PL/pgSQL expression outside it is set up again in
        -- every ERP transaction (measured).
        v_head := E'INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, source_table, operation, '
                  || CASE v_op WHEN 'INSERT' THEN 'data' WHEN 'DELETE' THEN 'old_data'
                               ELSE 'data, old_data, changed' END || ')'
                  || format(E'\n        SELECT pg_catalog.gen_random_uuid(), %L, %s, ', v_type, coalesce(v_major, 1));
        IF v_op IN ('INSERT', 'DELETE') THEN
            -- One row image: data (INSERT) or old_data (DELETE).
            v_alias := CASE v_op WHEN 'INSERT' THEN 'new' ELSE 'old' END;
            v_body := v_head
                || replace(v_key, '%s', v_alias || '.whk_j') || ','
                || format(E'\n               %L, %L, %s.whk_j', v_table, v_op, v_alias)
                -- OFFSET 0 keeps the planner from pulling the sub-select up, which would compute to_jsonb
                -- twice per row (once for the key, once for the image). With a condition the sub-select is
                -- left to be pulled up: the filter then runs before any row is turned into JSON.
                || format(E'\n        FROM (SELECT pg_catalog.to_jsonb(whk_row) AS whk_j%s FROM %s AS whk_row%s) AS %s',
                          v_cols, CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END,
                          CASE WHEN c.condition IS NULL THEN ' OFFSET 0' ELSE '' END, v_alias)
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
            v_filter := 'whk_c.whk_changed OPERATOR(pg_catalog.<>) ''{}''';
            IF c.columns IS NOT NULL THEN
                v_filter := v_filter
                    || format(' AND whk_c.whk_changed OPERATOR(pg_catalog.&&) %L::pg_catalog.text[]', c.columns);
            END IF;
            IF c.condition IS NOT NULL THEN
                v_filter := v_filter || E'\n          AND (' || c.condition || ')';
            END IF;
            -- Each side numbered in scan order (%1$s = its transition table). ROWS frame: with the default
            -- (RANGE) frame and no ORDER BY every row is a peer of every other, so PostgreSQL 15 copies the
            -- whole transition table into a second tuplestore (on disk past work_mem) before it numbers the
            -- first row. A ROWS frame numbers the rows as it reads.
            v_numbered := format(E'(SELECT pg_catalog.row_number() OVER (ROWS UNBOUNDED PRECEDING) AS whk_rn,'
                                 '\n                     pg_catalog.to_jsonb(whk_row) AS whk_j%s'
                                 '\n              FROM %%1$s AS whk_row)', v_cols);
            v_stmt := v_head
                || replace(v_key, '%s', 'new.whk_j') || ','
                || format(E'\n               %L, ''UPDATE'', new.whk_j, old.whk_j, whk_c.whk_changed', v_table)
                || E'\n        FROM ' || format(v_numbered, 'whk_new') || ' AS new'
                || E'\n        JOIN ' || format(v_numbered, 'whk_old') || ' AS old'
                || E'\n          ON old.whk_rn OPERATOR(pg_catalog.=) new.whk_rn'
                || E'\n        CROSS JOIN LATERAL (SELECT ARRAY(SELECT e.key FROM pg_catalog.jsonb_each(new.whk_j) AS e'
                -- e.value is never NULL, so this is `IS DISTINCT FROM` with a qualified operator.
                || E'\n                                          WHERE (e.value OPERATOR(pg_catalog.=)'
                || E'\n                                                 (old.whk_j OPERATOR(pg_catalog.->) e.key)) IS NOT TRUE'
                -- OFFSET 0: computed once per row. Pulled up, the ARRAY sub-select ran twice per row (for
                -- the filter and for the output column).
                || E'\n                                          ORDER BY e.key) AS whk_changed OFFSET 0) AS whk_c'
                || E'\n        WHERE ' || v_filter;
            -- Old and new rows are paired by a join, and PL/pgSQL plans a static statement once per session,
            -- for the transition table it saw first: after a one-row UPDATE the cached plan was a nested
            -- loop that rescanned the old rows for every new row (5,000 rows took 90 s, measured), and after
            -- a large one every later statement ran the large plan. Statements of more than 8 rows are
            -- planned for their own size (EXECUTE: ~0.5 ms of planning, nothing next to their rows); the
            -- cached plan only ever sees up to 8. EXECUTE does not set FOUND, the wake-up test reads it.
            v_upd := format(E'IF EXISTS (SELECT FROM whk_new OFFSET 8) THEN'
                            '\n            EXECUTE %L;'
                            '\n            GET DIAGNOSTICS whk_n = ROW_COUNT;'
                            '\n            FOUND := whk_n OPERATOR(pg_catalog.>) 0;'
                            '\n        ELSE'
                            '\n        %s;'
                            '\n        END IF', v_stmt, v_stmt);
        END IF;
    END LOOP;

    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';

    -- One function per captured operation (migration 0019), <function_name>_ins, _upd and _del (at most 63
    -- characters: function_name has at most 59). Each trigger runs only its own statement: no TG_OP test,
    -- which cost every captured statement ~2 us (measured). Create or re-point the trigger of each captured
    -- operation, drop the trigger and function of the others (quietly: only those that exist). A trigger
    -- already calling its function is left alone: CREATE OR REPLACE FUNCTION kept its identity, so
    -- regenerating for a new event major needs no privilege on the ERP table.
    FOR v_op, v_type, v_sfx IN SELECT o.op, o.trg, o.sfx
                                  FROM (VALUES ('INSERT', 'whk_capture_insert', 'ins'),
                                               ('UPDATE', 'whk_capture_update', 'upd'),
                                               ('DELETE', 'whk_capture_delete', 'del')) AS o(op, trg, sfx) LOOP
        v_fn := format('whk.%I()', c.function_name || '_' || v_sfx);
        IF v_op = ANY (c.operations) THEN
            EXECUTE format($f$
CREATE OR REPLACE FUNCTION %s
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER%s
AS $whk_capture$
#variable_conflict use_column
-- Generated by whk.enable_capture: %s on %s (prefix %s). Do not edit: call whk.enable_capture again.
-- Every name is schema-qualified: the caller's search_path cannot redirect any of them.%s
BEGIN
    %s;
    -- The wake-up of whk.wake_dispatchers, inlined: at most one NOTIFY per statement, only when the INSERT
    -- wrote rows (FOUND) and a live dispatcher is idle (whk.dispatcher_is_idle, inlined by the planner: no
    -- call); identical notifications fold per transaction.
    IF FOUND AND whk.dispatcher_is_idle() THEN
        PERFORM pg_catalog.pg_notify('whk_outbox', '');
    END IF;
    RETURN NULL;
END;
$whk_capture$$f$, v_fn,
                           CASE WHEN c.condition IS NULL THEN ''
                                -- the condition is the caller's SQL: resolve its names in pg_catalog only
                                ELSE E'\nSET search_path = pg_catalog, pg_temp' END,
                           v_op, v_table, c.event_prefix,
                           CASE WHEN v_op = 'UPDATE' THEN E'\nDECLARE\n    whk_n bigint;' ELSE '' END,
                           CASE v_op WHEN 'INSERT' THEN v_ins WHEN 'UPDATE' THEN v_upd ELSE v_del END);
            EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_fn,
                           format('Capture trigger (%s) of %s (events %s.*), generated by whk.enable_capture.',
                                  v_op, v_table, c.event_prefix));
            IF v_owner <> current_user THEN
                EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_fn, v_owner);
            END IF;
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
            IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                            WHERE t.tgrelid = p_tbl AND t.tgname = v_type AND t.tgfoid = v_fn::regprocedure) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                               'EXECUTE FUNCTION %s',
                               v_type, v_op, p_tbl,
                               CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                         WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                         ELSE 'OLD TABLE AS whk_old' END,
                               v_fn);
            END IF;
        ELSE
            IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p_tbl AND t.tgname = v_type) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', v_type, p_tbl);
            END IF;
            IF to_regprocedure(v_fn) IS NOT NULL THEN
                EXECUTE format('DROP FUNCTION %s', v_fn);
            END IF;
        END IF;
    END LOOP;
    RETURN c.function_name;
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_install(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_install(regclass) IS
    'Regenerate the capture trigger function and triggers of a table from whk.capture_config.';
