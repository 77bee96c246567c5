-- whk.capture_aggregate_check: validate the `aggregate` argument of whk.enable_capture for root table tbl
-- (its resolved key columns, its condition) and return it normalised: each child as
-- 'schema.table.column' with quoted identifiers where needed, sorted, without duplicates. Every refusal
-- raises with a HINT: the aggregate's flush reads these tables by these columns at every commit, so a
-- mistake must surface here, never in the ERP's transaction.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_check(tbl regclass, event_prefix text, key_columns text[],
                                                       condition text, aggregate text[])
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    v_elem   text;
    v_parts  text[];
    v_child  regclass;
    v_kind   "char";
    v_nsp    text;
    v_rel    text;
    v_owner  text;
    v_other  regclass;
    v_out    text[] := '{}';
    v_tables regclass[] := '{}';
    v_ctype  oid;
    v_rtype  oid;
BEGIN
    IF condition IS NOT NULL THEN
        RAISE EXCEPTION 'a capture condition cannot be combined with aggregate capture of %', tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'an aggregate emits one event per key and transaction; filter with columns => ... or in the webhook''s filter';
    END IF;
    IF cardinality(key_columns) <> 1 THEN
        RAISE EXCEPTION 'aggregate capture of % needs a one-column key, found %', tbl,
            CASE WHEN cardinality(key_columns) = 0 THEN 'no primary key' ELSE array_to_string(key_columns, ', ') END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass key_column => a column that identifies one row (the primary key or a unique column)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = tbl AND i.indisunique AND i.indpred IS NULL AND i.indnkeyatts = 1
                      AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a
                                          WHERE a.attrelid = tbl AND a.attname = key_columns[1])) THEN
        RAISE EXCEPTION 'the aggregate key %.% does not identify one row', tbl, quote_ident(key_columns[1])
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use the primary key, or a column with a unique index of its own';
    END IF;
    IF cardinality(aggregate) > 9 THEN
        -- Each child gets generated functions <function_name>_<n>i|u|d within PostgreSQL's 63-character names.
        RAISE EXCEPTION 'aggregate % lists % child tables, at most 9 are supported', event_prefix, cardinality(aggregate)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'nest only the child tables receivers need in this event';
    END IF;
    BEGIN
        -- The flush finds the root by its key with pg_catalog's operators only.
        EXECUTE format('SELECT FROM %s AS r WHERE r.%I OPERATOR(pg_catalog.=) r.%I LIMIT 0',
                       tbl, key_columns[1], key_columns[1]);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'the aggregate key %.% cannot be compared: %', tbl, quote_ident(key_columns[1]), SQLERRM
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'aggregate keys must be of a type whose = operator is built in (integers, text, uuid, ...)';
    END;
    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';

    FOREACH v_elem IN ARRAY aggregate LOOP
        BEGIN
            v_parts := parse_ident(coalesce(v_elem, ''));
        EXCEPTION WHEN invalid_parameter_value THEN
            v_parts := NULL;
        END;
        IF cardinality(v_parts) IS DISTINCT FROM 3 THEN
            RAISE EXCEPTION 'invalid aggregate child %', coalesce(quote_literal(v_elem), 'NULL')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'name each child as ''schema.table.column'', the column holding the root''s key, e.g. ''erp.order_lines.order_id''';
        END IF;
        v_child := to_regclass(format('%I.%I', v_parts[1], v_parts[2]));
        IF v_child IS NULL THEN
            RAISE EXCEPTION 'aggregate child table %.% does not exist', quote_ident(v_parts[1]), quote_ident(v_parts[2])
                USING ERRCODE = 'undefined_table', HINT = 'name each child as ''schema.table.column'' of an existing table';
        END IF;
        SELECT r.relkind, n.nspname, r.relname INTO v_kind, v_nsp, v_rel
          FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = v_child;
        IF v_kind NOT IN ('r', 'p') OR v_child = tbl OR v_nsp IN ('whk', 'pg_catalog', 'information_schema')
           OR v_nsp LIKE 'pg\_%' THEN
            RAISE EXCEPTION '% cannot be a child of aggregate %', v_child, event_prefix
                USING ERRCODE = 'wrong_object_type',
                      HINT = 'a child is an ERP table other than the root (not a view, not a table of schema whk)';
        END IF;
        IF v_child = ANY (v_tables) THEN
            RAISE EXCEPTION 'table % is listed twice in aggregate %', v_child, event_prefix
                USING ERRCODE = 'duplicate_object', HINT = 'a child table joins the aggregate by one column';
        END IF;
        v_tables := v_tables || v_child;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_child AND a.attname = v_parts[3]
                        AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in %', quote_ident(v_parts[3]), v_child
                USING ERRCODE = 'undefined_column',
                      HINT = format('name the column of %s that holds the key of %s (%s)', v_child, tbl, key_columns[1]);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = v_rel
                    AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'child % would nest under "%", a column of %', v_child, v_rel, tbl
                USING ERRCODE = 'duplicate_column',
                      HINT = 'children nest in the event under their table''s name; it must not be a column of the root';
        END IF;
        SELECT cc.tbl INTO v_other
          FROM whk.capture_config cc, unnest(cc.aggregate) AS a
         WHERE cc.tbl <> tbl
           AND to_regclass(format('%I.%I', (parse_ident(a))[1], (parse_ident(a))[2])) = v_child;
        IF FOUND THEN
            RAISE EXCEPTION 'table % is already a child of the aggregate of %', v_child, v_other
                USING ERRCODE = 'unique_violation', HINT = 'a table belongs to one aggregate';
        END IF;
        -- Keys are staged as text and cast back to the root key's type at commit: the child's values must
        -- be values of that type (the same type, or integers for an integer key, strings for a string key),
        -- or a value such as 1.5 would fail the ERP's commit.
        SELECT ck.t, rk.t INTO v_ctype, v_rtype
          FROM (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) AS t FROM pg_attribute a
                  JOIN pg_type ty ON ty.oid = a.atttypid
                 WHERE a.attrelid = v_child AND a.attname = v_parts[3]) AS ck,
               (SELECT coalesce(nullif(ty.typbasetype, 0), ty.oid) AS t FROM pg_attribute a
                  JOIN pg_type ty ON ty.oid = a.atttypid
                 WHERE a.attrelid = tbl AND a.attname = key_columns[1]) AS rk;
        IF v_ctype <> v_rtype
           AND NOT (v_ctype IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                    AND v_rtype IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype))
           AND NOT (v_ctype IN ('text'::regtype, 'varchar'::regtype) AND v_rtype IN ('text'::regtype, 'varchar'::regtype)) THEN
            RAISE EXCEPTION 'column %.% (%) cannot hold the key of % (%)', v_child, quote_ident(v_parts[3]),
                format_type(v_ctype, NULL), tbl, format_type(v_rtype, NULL)
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('the child''s column must hold values of %s.%s (the same type, or integer for an integer key)',
                                    tbl, key_columns[1]);
        END IF;
        BEGIN
            -- The flush joins them with pg_catalog's operators only (it runs with search_path = pg_catalog).
            EXECUTE format('SELECT FROM %s AS c JOIN %s AS r ON c.%I OPERATOR(pg_catalog.=) r.%I LIMIT 0',
                           v_child, tbl, v_parts[3], key_columns[1]);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'column %.% cannot be compared with the key of %: %', v_child, quote_ident(v_parts[3]),
                tbl, SQLERRM
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'aggregate keys must be of a type whose = operator is built in (integers, text, uuid, ...)';
        END;
        v_out := v_out || format('%I.%I.%I', v_nsp, v_rel, v_parts[3]);
    END LOOP;

    -- The flush (SECURITY DEFINER, owned by the owner of schema whk) reads the root and the children.
    SELECT string_agg(t::text, ', ') INTO v_elem
      FROM unnest(tbl || v_tables) AS t WHERE NOT has_table_privilege(v_owner, t, 'SELECT');
    IF v_elem IS NOT NULL THEN
        RAISE EXCEPTION 'role % (owner of schema whk) cannot read %', v_owner, v_elem
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT SELECT ON %s TO %I', v_elem, v_owner);
    END IF;
    RETURN ARRAY(SELECT a FROM unnest(v_out) AS a ORDER BY 1);
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_check(regclass, text, text[], text, text[]) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_check(regclass, text, text[], text, text[]) IS
    'Validate and normalise the aggregate argument of whk.enable_capture (children as schema.table.column).';
