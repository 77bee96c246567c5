-- whk.retention_delete_audit: one batch of audit-trail retention. The audit log is append-only for every
-- WHK role (none has DELETE on it); this SECURITY DEFINER function, owned by the schema owner, is the one
-- way rows leave, and it only deletes rows older than the 'audit' horizon (retention.audit_days, at
-- least 30 days by its bounds), oldest first along audit_log_occurred_idx, at most p_batch per call. So a
-- role allowed to run retention still cannot erase or rewrite recent audit rows. Returns how many were
-- deleted; call it until it returns less than p_batch.
CREATE OR REPLACE FUNCTION whk.retention_delete_audit(p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % out of bounds', p_batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'between 1 and 100000 rows per call';
    END IF;
    DELETE FROM whk.audit_log l
     WHERE l.id IN (SELECT a.id FROM whk.audit_log a
                     -- The 30-day floor again here: the function must hold it even if the setting's
                     -- CHECK were dropped.
                     WHERE a.occurred_at < least(whk.retention_horizon('audit'), now() - interval '30 days')
                     ORDER BY a.occurred_at, a.id
                     LIMIT p_batch);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.retention_delete_audit(integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.retention_delete_audit(integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.retention_delete_audit(integer) IS
    'Retention: delete one batch of audit rows older than retention.audit_days (the only way rows leave).';
