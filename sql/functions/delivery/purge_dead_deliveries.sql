-- whk.purge_dead_deliveries: remove dead letters for good (the API's DELETE /deliveries/{id} and POST
-- /deliveries/purge; a DBA's psql). Only rows still dead when this runs are deleted, whatever ids are
-- passed: a delivery retried meanwhile (back to pending) or never dead is left alone, so the caller's
-- count of candidates is an upper bound and the return value is the truth. Their attempts go with them
-- (the requests that carried only this delivery; a batch request's attempt stays with its day until
-- retention drops it). Returns the ids deleted, ascending.
CREATE OR REPLACE FUNCTION whk.purge_dead_deliveries(p_ids bigint[])
RETURNS SETOF bigint
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    WITH gone AS (
        DELETE FROM whk.delivery_queue d
         WHERE d.id = ANY (p_ids) AND d.status = 'dead'
        RETURNING d.id
    ), attempts AS (
        DELETE FROM whk.whk_03_entregas_tentativas t
         WHERE t.delivery_id IN (SELECT g.id FROM gone g) AND t.delivery_ids IS NULL
    )
    SELECT id FROM gone ORDER BY id;
$$;
COMMENT ON FUNCTION whk.purge_dead_deliveries(bigint[]) IS
    'Delete the dead letters among p_ids (others untouched), with their attempts; returns the ids deleted.';
