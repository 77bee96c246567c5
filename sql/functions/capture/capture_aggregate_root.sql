-- whk.capture_aggregate_root: the statement trigger of an aggregate's root table (whk.enable_capture with
-- `aggregate`). It writes no event: it records in whk.capture_aggregate_pending which aggregate keys the
-- statement touched and, at a key's first write in the transaction, whether its row was created or
-- existed, with its image from before. The aggregate's flush (the generated whk.<function_name>_agg, a
-- constraint trigger deferred to commit) then writes one event per key from the state at commit.
-- TG_ARGV: [0] the aggregate (the root's event prefix), [1] the root's key column.
--
-- Generic rather than generated: it reads only the transition tables and its arguments, and PL/pgSQL
-- compiles (and caches the plans of) a trigger function once per table it is attached to. Like the
-- generated per-row capture code it has no SET clause (each costs every ERP statement ~10 us) and names
-- every function and operator schema-qualified, so the caller's search_path cannot redirect them. The key
-- is read from the row's JSON, as in per-row capture: a NULL key stages nothing.
CREATE OR REPLACE FUNCTION whk.capture_aggregate_root()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
        INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, root_state)
        SELECT pg_catalog.pg_current_xact_id(), TG_ARGV[0], n.k, 'created'
          FROM (SELECT pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1] AS k FROM whk_new AS r) AS n
         WHERE n.k IS NOT NULL
        -- A key first written by an UPDATE or DELETE keeps 'existed' (deleted, then inserted again).
        ON CONFLICT (txid, aggregate, agg_key) DO UPDATE SET root_state = 'created' WHERE p.root_state IS NULL;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        -- The old rows existed before the statement; a key the UPDATE moved a row to did not.
        INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, root_state, old_root)
        SELECT pg_catalog.pg_current_xact_id(), TG_ARGV[0], s.k, s.state, s.j
          FROM (SELECT o.j OPERATOR(pg_catalog.->>) TG_ARGV[1] AS k, 'existed' AS state, o.j
                  FROM (SELECT pg_catalog.to_jsonb(r) AS j FROM whk_old AS r) AS o
                UNION ALL
                SELECT n.k, 'created', NULL
                  FROM (SELECT pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1] AS k FROM whk_new AS r) AS n
                 WHERE NOT EXISTS (SELECT FROM whk_old AS r
                                    WHERE (pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) TG_ARGV[1])
                                          OPERATOR(pg_catalog.=) n.k)) AS s
         WHERE s.k IS NOT NULL
        ON CONFLICT (txid, aggregate, agg_key) DO UPDATE SET root_state = excluded.root_state, old_root = excluded.old_root
         WHERE p.root_state IS NULL;
    ELSE
        INSERT INTO whk.capture_aggregate_pending AS p (txid, aggregate, agg_key, root_state, old_root)
        SELECT pg_catalog.pg_current_xact_id(), TG_ARGV[0], o.j OPERATOR(pg_catalog.->>) TG_ARGV[1], 'existed', o.j
          FROM (SELECT pg_catalog.to_jsonb(r) AS j FROM whk_old AS r) AS o
         WHERE (o.j OPERATOR(pg_catalog.->>) TG_ARGV[1]) IS NOT NULL
        ON CONFLICT (txid, aggregate, agg_key) DO UPDATE SET root_state = 'existed', old_root = excluded.old_root
         WHERE p.root_state IS NULL;
    END IF;
    RETURN NULL;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.capture_aggregate_root() FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_aggregate_root() IS
    'Aggregate capture: stage the keys an ERP statement on a root table touched (flushed into one event each at commit).';
