-- whk.capture_aggregate_install: (re)generate the capture of a table captured as an aggregate root
-- (whk.capture_config.aggregate not NULL), called by whk.capture_install. Rows of one transaction that
-- share an aggregate key become one event at commit:
--   * statement triggers whk_capture_insert|update|delete on the root and whk_aggregate_insert|update|delete
--     on each child run generated staging functions (<function_name>_ins|_upd|_del, <function_name>_<n>i|u|d)
--     that record the touched keys in whk.capture_aggregate_pending: one row per key and transaction,
--     whatever the number of statements;
--   * the constraint trigger <function_name>_agg on that table, DEFERRABLE INITIALLY DEFERRED, fires once
--     per staged row at commit and runs the generated whk.<function_name>_agg(), which reads the root row
--     and its children as they are then and writes the one event (or none).
-- The root has all three triggers whatever `operations` says: its first write in the transaction decides
-- between created and updated, and a delete between updated and deleted; `operations` filters at commit.
-- Triggers already calling the right function are left alone (CREATE OR REPLACE FUNCTION keeps its
-- identity), so regenerating for a new event major needs no privilege on the ERP tables.
--
-- The flush runs once per aggregate and transaction, not per ERP statement: it keeps a
-- `SET search_path = pg_catalog, pg_temp` (~10 us per aggregate) rather than qualifying every operator.
-- It reads the root by its key and the children by their key column (index that column, as for any
-- foreign key), as SECURITY DEFINER: the owner of schema whk needs SELECT on those tables
-- (whk.enable_capture checks it).
CREATE OR REPLACE FUNCTION whk.capture_aggregate_install(tbl regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $install$
#variable_conflict use_column
DECLARE
    p_tbl      regclass := capture_aggregate_install.tbl;
    c          whk.capture_config%ROWTYPE;
    v_table    text;
    v_root     text;
    v_key      text;
    v_key_type text;
    v_owner    text;
    v_fn       text;
    v_members  text := '';
    v_changed  text;
    v_types    text := '';
    v_majors   text := '';
    v_elem     text;
    v_parts    text[];
    v_child    regclass;
    v_order    text;
    v_op       text;
    v_trg      text;
    v_sfx      text;
    v_type     text;
    v_major    integer;
    v_body     text;
    v_xact     text;
    v_cfn      text;
    v_n        integer;
    v_keep     text[];
BEGIN
    SELECT * INTO c FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl;
    IF NOT FOUND OR c.aggregate IS NULL THEN
        RAISE EXCEPTION 'table % is not captured as an aggregate', p_tbl
            USING ERRCODE = 'undefined_object', HINT = 'call whk.enable_capture(..., aggregate => ...) first';
    END IF;
    SELECT n.nspname || '.' || r.relname, format('%I.%I', n.nspname, r.relname) INTO v_table, v_root
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    v_key := c.key_columns[1];
    SELECT format_type(a.atttypid, a.atttypmod) INTO v_key_type
      FROM pg_attribute a WHERE a.attrelid = p_tbl AND a.attname = v_key;
    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';
    v_fn := c.function_name || '_agg';

    -- The children, each nested under its table's name as a JSON array ordered by its primary key.
    FOREACH v_elem IN ARRAY c.aggregate LOOP
        v_parts := parse_ident(v_elem);
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        SELECT coalesce(' ORDER BY ' || string_agg(format('c.%I', a.attname), ', ' ORDER BY k.ord), '') INTO v_order
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = v_child AND i.indisprimary;
        v_members := v_members || CASE WHEN v_members = '' THEN '' ELSE ',' END
            || format(E'\n               %L, coalesce((SELECT jsonb_agg(to_jsonb(c)%s) FROM %I.%I AS c'
                      '\n                             WHERE c.%I = r.%I), ''[]'')',
                      v_parts[2], v_order, v_parts[1], v_parts[2], v_parts[3], v_key);
    END LOOP;

    -- The event type and major of each captured operation, baked in (the flush does no catalog lookup).
    FOREACH v_op IN ARRAY c.operations LOOP
        v_type := c.event_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated'
                                              ELSE '.deleted' END;
        SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = v_type;
        v_types := v_types || format(' WHEN %L THEN %L', v_op, v_type);
        v_majors := v_majors || format(' WHEN %L THEN %s', v_op, coalesce(v_major, 1));
    END LOOP;
    -- An UPDATE event lists the root's changed columns (only listened ones when `columns` is set) and the
    -- members whose rows were written.
    v_changed := 'SELECT e.key FROM jsonb_each(whk_root) AS e WHERE e.value IS DISTINCT FROM whk_old -> e.key'
        || CASE WHEN c.columns IS NOT NULL THEN format(' AND e.key = ANY (%L::text[])', c.columns) ELSE '' END
        || E'\n                             UNION SELECT unnest(whk_p.members) ORDER BY 1';

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION whk.%I()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $whk_capture$
#variable_conflict use_column
-- Generated by whk.enable_capture: the commit-time flush of aggregate %s (root %s). Do not edit: call
-- whk.enable_capture again. Fired once per key staged in whk.capture_aggregate_pending by a transaction.
DECLARE
    whk_p    whk.capture_aggregate_pending;
    whk_root jsonb;
    whk_nest jsonb;
    whk_old  jsonb;
    whk_op   text;
    whk_chg  text[];
BEGIN
    -- NEW is the row as first staged; later statements may have added to it: take (and remove) it now.
    DELETE FROM whk.capture_aggregate_pending AS p
     WHERE p.txid = NEW.txid AND p.aggregate = NEW.aggregate AND p.agg_key = NEW.agg_key
    RETURNING p.* INTO whk_p;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The aggregate as it is at commit.
    SELECT to_jsonb(r), jsonb_build_object(%s) INTO whk_root, whk_nest
      FROM %s AS r WHERE r.%I = whk_p.agg_key::%s;
    IF whk_root IS NULL THEN
        -- Gone at commit: deleted if it existed before the transaction; nothing if it was created in it,
        -- or if only children of a root that does not exist were written.
        IF whk_p.root_state IS DISTINCT FROM 'existed' THEN
            RETURN NULL;
        END IF;
        whk_op := 'DELETE';
        whk_old := whk_p.old_root;
    ELSIF whk_p.root_state = 'created' THEN
        whk_op := 'INSERT';
    ELSE
        -- Updated: old is the root before the transaction (the current row when only children changed).
        whk_op := 'UPDATE';
        whk_old := coalesce(whk_p.old_root, whk_root);
        whk_chg := ARRAY(%s);
        IF cardinality(whk_chg) = 0 THEN
            RETURN NULL;  -- written, but back to where it was
        END IF;
    END IF;
    IF whk_op <> ALL (%L::text[]) THEN
        RETURN NULL;  -- an operation not captured
    END IF;
    INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, source_table, operation, data,
                            old_data, changed)
    VALUES (gen_random_uuid(), CASE whk_op%s END, CASE whk_op%s END, whk_p.agg_key, %L, whk_op,
            CASE WHEN whk_op <> 'DELETE' THEN whk_root || whk_nest END, whk_old, whk_chg);
    -- The conditional wake-up, as in per-row capture (folds into one NOTIFY per transaction).
    IF whk.dispatcher_is_idle() THEN
        PERFORM pg_notify('whk_outbox', '');
    END IF;
    RETURN NULL;
END;
$whk_capture$$f$, v_fn, c.event_prefix, v_table, v_members, v_root, v_key, v_key_type, v_changed,
                   c.operations, v_types, v_majors, v_table);
    EXECUTE format('COMMENT ON FUNCTION whk.%I() IS %L', v_fn,
                   format('Commit-time flush of aggregate %s (root %s), generated by whk.enable_capture.',
                          c.event_prefix, v_table));
    IF v_owner <> current_user THEN
        EXECUTE format('ALTER FUNCTION whk.%I() OWNER TO %I', v_fn, v_owner);
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION whk.%I() FROM PUBLIC', v_fn);
    -- The deferred flush: one constraint trigger per aggregate on the shared staging table, filtered by WHEN
    -- (evaluated as the row is staged, no call). Constraint triggers cannot be replaced in place, and
    -- dropping one locks the staging table of every aggregate (waiting for open ERP transactions that
    -- staged rows): it is recreated only when its aggregate's prefix changed, not for a new event major.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass AND t.tgname = v_fn
                      AND t.tgfoid = format('whk.%I()', v_fn)::regprocedure
                      AND strpos(pg_get_triggerdef(t.oid),
                                 format(' WHEN ((new.aggregate = %L::text)) ', c.event_prefix)) > 0) THEN
        IF EXISTS (SELECT 1 FROM pg_trigger t
                    WHERE t.tgrelid = 'whk.capture_aggregate_pending'::regclass AND t.tgname = v_fn) THEN
            EXECUTE format('DROP TRIGGER %I ON whk.capture_aggregate_pending', v_fn);
        END IF;
        EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER INSERT ON whk.capture_aggregate_pending '
                       'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.aggregate = %L) EXECUTE FUNCTION whk.%I()',
                       v_fn, c.event_prefix, v_fn);
    END IF;

    -- The staging functions: <function_name>_ins|_upd|_del on the root (the names per-row capture uses, so
    -- its triggers stay put), <function_name>_<n>i|u|d on the n-th child. Each is one INSERT ... SELECT
    -- over the statement's transition table, the key read as a column cast to text (root and children alike,
    -- so their keys compare as text) and the row turned into JSON only for the root's old image.
    v_xact := 'pg_catalog.pg_current_xact_id()';
    FOR v_op, v_trg, v_sfx IN SELECT o.op, o.trg, o.sfx
                                FROM (VALUES ('INSERT', 'whk_capture_insert', 'ins'),
                                             ('UPDATE', 'whk_capture_update', 'upd'),
                                             ('DELETE', 'whk_capture_delete', 'del')) AS o(op, trg, sfx) LOOP
        v_body := format(E'INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, root_state, old_root)'
                         '\n        SELECT %s, %L, s.k, s.state, s.j FROM (', v_xact, c.event_prefix)
            || CASE v_op
                   WHEN 'INSERT' THEN format(E'\n            SELECT r.%I::pg_catalog.text AS k, ''created'' AS state,'
                                             ' NULL::pg_catalog.jsonb AS j FROM whk_new AS r', v_key)
                   -- A key the UPDATE moved a row to did not exist before. Grouped, not joined: PL/pgSQL
                   -- caches a statement's plan per session, and a join planned for a one-row UPDATE (a
                   -- nested loop) would compare every old row with every new row of a later bulk UPDATE.
                   WHEN 'UPDATE' THEN format(E'\n            SELECT g.k, CASE WHEN pg_catalog.bool_or(g.o) THEN ''existed'''
                                             ' ELSE ''created'' END AS state,'
                                             ' (pg_catalog.array_agg(g.j) FILTER (WHERE g.o))[1] AS j'
                                             '\n              FROM (SELECT r.%1$I::pg_catalog.text AS k, true AS o,'
                                             ' pg_catalog.to_jsonb(r) AS j FROM whk_old AS r'
                                             '\n                    UNION ALL'
                                             '\n                    SELECT r.%1$I::pg_catalog.text, false, NULL FROM whk_new AS r) AS g'
                                             '\n             GROUP BY g.k', v_key)
                   ELSE format(E'\n            SELECT r.%I::pg_catalog.text AS k, ''existed'' AS state,'
                               ' pg_catalog.to_jsonb(r) AS j FROM whk_old AS r', v_key)
               END
            || E') AS s\n         WHERE s.k IS NOT NULL'
            -- A key's first write in the transaction decides (deleted then inserted again stays 'existed').
            || E'\n        ON CONFLICT (txid, aggregate, agg_key)'
            || E'\n        DO UPDATE SET root_state = excluded.root_state, old_root = excluded.old_root WHERE p.root_state IS NULL';
        PERFORM whk.capture_aggregate_stage_function(
            c.function_name || '_' || v_sfx, v_body, format('%s on the root %s of aggregate %s', v_op, v_table,
                                                            c.event_prefix), v_owner);
        IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                        WHERE t.tgrelid = p_tbl AND t.tgname = v_trg
                          AND t.tgfoid = format('whk.%I()', c.function_name || '_' || v_sfx)::regprocedure) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                           'EXECUTE FUNCTION whk.%I()',
                           v_trg, v_op, p_tbl,
                           CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                     WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                     ELSE 'OLD TABLE AS whk_old' END,
                           c.function_name || '_' || v_sfx);
        END IF;
    END LOOP;

    v_n := 0;
    v_keep := '{}';
    FOREACH v_elem IN ARRAY c.aggregate LOOP
        v_n := v_n + 1;
        v_parts := parse_ident(v_elem);
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        FOR v_op, v_trg, v_sfx IN SELECT o.op, o.trg, o.sfx
                                    FROM (VALUES ('INSERT', 'whk_aggregate_insert', 'i'),
                                                 ('UPDATE', 'whk_aggregate_update', 'u'),
                                                 ('DELETE', 'whk_aggregate_delete', 'd')) AS o(op, trg, sfx) LOOP
            v_cfn := c.function_name || '_' || v_n || v_sfx;
            v_keep := v_keep || v_cfn;
            v_body := format(E'INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, members)'
                             '\n        SELECT %s, %L, s.k, ARRAY[%L] FROM (', v_xact, c.event_prefix, v_parts[2])
                || CASE v_op
                       WHEN 'INSERT' THEN format('SELECT DISTINCT r.%I::pg_catalog.text AS k FROM whk_new AS r', v_parts[3])
                       WHEN 'UPDATE' THEN format('SELECT r.%1$I::pg_catalog.text AS k FROM whk_new AS r'
                                                 ' UNION SELECT r.%1$I::pg_catalog.text FROM whk_old AS r', v_parts[3])
                       ELSE format('SELECT DISTINCT r.%I::pg_catalog.text AS k FROM whk_old AS r', v_parts[3])
                   END
                || E') AS s\n         WHERE s.k IS NOT NULL'
                || E'\n        ON CONFLICT (txid, aggregate, agg_key)'
                || E'\n        DO UPDATE SET members = p.members OPERATOR(pg_catalog.||) excluded.members'
                || E'\n         WHERE NOT p.members OPERATOR(pg_catalog.@>) excluded.members';
            PERFORM whk.capture_aggregate_stage_function(
                v_cfn, v_body, format('%s on %s, child of aggregate %s', v_op, v_child, c.event_prefix), v_owner);
            IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                            WHERE t.tgrelid = v_child AND t.tgname = v_trg
                              AND t.tgfoid = format('whk.%I()', v_cfn)::regprocedure) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                               'EXECUTE FUNCTION whk.%I()',
                               v_trg, v_op, v_child,
                               CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                         WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                         ELSE 'OLD TABLE AS whk_old' END,
                               v_cfn);
            END IF;
        END LOOP;
    END LOOP;
    -- Staging functions of children no longer listed (their triggers are gone: whk.enable_capture).
    FOR v_cfn IN SELECT p.proname FROM pg_proc p
                  WHERE p.pronamespace = 'whk'::regnamespace
                    AND left(p.proname, length(c.function_name) + 1) = c.function_name || '_'
                    AND substr(p.proname, length(c.function_name) + 2) ~ '^[0-9]+[iud]$'
                    AND NOT p.proname = ANY (v_keep) LOOP
        EXECUTE format('DROP FUNCTION whk.%I()', v_cfn);
    END LOOP;
    RETURN c.function_name;
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_install(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_install(regclass) IS
    'Regenerate the aggregate capture of a root table: staging triggers on it and its children, the commit-time flush.';
