-- whk.capture_aggregate_child: the statement trigger of a child table of an aggregate (whk.enable_capture
-- with `aggregate`, e.g. erp.order_lines of erp.orders). It writes no event: it records in
-- whk.capture_aggregate_pending the aggregate keys of the rows the statement wrote (an UPDATE that moves a
-- row to another key touches both) and the member name whose rows changed; the aggregate's flush writes one
-- event per key at commit, with the children as they are then.
-- TG_ARGV: [0] the aggregate (the root's event prefix), [1] the child's column holding the root's key,
-- [2] the member name the child's rows nest under.
-- Generic, no SET clause, every name schema-qualified: see whk.capture_aggregate_root.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_child()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, members)
        SELECT pg_catalog.pg_current_xact_id(), TG_ARGV[0], n.k, ARRAY[TG_ARGV[2]]
          FROM (SELECT DISTINCT pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1] AS k FROM whk_new AS r) AS n
         WHERE n.k IS NOT NULL
        ON CONFLICT (txid, aggregate, agg_key)
        DO UPDATE SET members = p.members OPERATOR(pg_catalog.||) excluded.members
         WHERE NOT p.members OPERATOR(pg_catalog.@>) excluded.members;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, members)
        SELECT pg_catalog.pg_current_xact_id(), TG_ARGV[0], n.k, ARRAY[TG_ARGV[2]]
          FROM (SELECT pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1] AS k FROM whk_new AS r
                UNION
                SELECT pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1] FROM whk_old AS r) AS n
         WHERE n.k IS NOT NULL
        ON CONFLICT (txid, aggregate, agg_key)
        DO UPDATE SET members = p.members OPERATOR(pg_catalog.||) excluded.members
         WHERE NOT p.members OPERATOR(pg_catalog.@>) excluded.members;
    ELSE
        INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, members)
        SELECT pg_catalog.pg_current_xact_id(), TG_ARGV[0], o.k, ARRAY[TG_ARGV[2]]
          FROM (SELECT DISTINCT pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1] AS k FROM whk_old AS r) AS o
         WHERE o.k IS NOT NULL
        ON CONFLICT (txid, aggregate, agg_key)
        DO UPDATE SET members = p.members OPERATOR(pg_catalog.||) excluded.members
         WHERE NOT p.members OPERATOR(pg_catalog.@>) excluded.members;
    END IF;
    RETURN NULL;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_child() FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_child() IS
    'Aggregate capture: stage the aggregate keys of the child rows an ERP statement wrote (flushed at commit).';
