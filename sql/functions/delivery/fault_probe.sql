-- Run one stage of a dispatcher round restricted to some webhooks, then undo it: the error it raised (its
-- SQLSTATE and message), or no row when it ran cleanly. whk.isolate_round_faults bisects with it.
--
-- p_stage 'route' runs whk.route_and_take, 'claim' runs whk.route_and_take then whk.claim_deliveries, as a
-- round does (the claim may fail on deliveries routed a moment before, in the same round), and
-- 'claim_alone' only the claim (when routing itself fails for no webhook in particular), each with
-- p_only = p_ids: the real statements, so a probe exercises exactly what failed. Whatever the probe did (routed, claimed,
-- locked) is rolled back by raising WHK00 inside its own block (a subtransaction).
--
-- Only errors that data can cause are caught and returned, the classes a webhook's row can provoke:
-- 22 data exception (out of range, underflow, invalid text representation), 23 integrity constraint,
-- 2F SQL routine, 38/39 external routine, P0 PL/pgSQL (RAISE, ASSERT), 54 program limit (stack depth,
-- statement too complex), XX internal (corrupt data). Anything else (a lost connection, a statement
-- timeout, a missing function after a bad deploy, a lock timeout) is not about one webhook: it propagates.
CREATE OR REPLACE FUNCTION whk.fault_probe(p_stage text, p_dispatcher text, p_route_limit integer,
                                           p_lease_s double precision, p_ids bigint[])
RETURNS TABLE (error_state text, error_message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_state text;
    v_msg   text;
BEGIN
    IF p_stage IS NULL OR p_stage NOT IN ('route', 'claim', 'claim_alone') THEN
        RAISE EXCEPTION 'unknown probe stage %', coalesce(p_stage, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use route, claim or claim_alone';
    END IF;
    BEGIN
        IF p_stage = 'route' THEN
            PERFORM count(*) FROM whk.route_and_take(p_route_limit, p_dispatcher, 1000, p_lease_s, '{}', p_ids);
        ELSE
            IF p_stage = 'claim' THEN
                PERFORM count(*) FROM whk.route_and_take(p_route_limit, p_dispatcher, 1000, p_lease_s, '{}', p_ids);
            END IF;
            PERFORM count(*) FROM whk.claim_deliveries(p_dispatcher, 100000, p_lease_s, '{}', p_ids);
        END IF;
        RAISE EXCEPTION 'probe done: undo it' USING ERRCODE = 'WHK00';
    EXCEPTION
        WHEN SQLSTATE 'WHK00' THEN
            RETURN;
        WHEN data_exception OR integrity_constraint_violation OR sql_routine_exception
             OR external_routine_exception OR external_routine_invocation_exception OR plpgsql_error
             OR program_limit_exceeded OR internal_error THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            error_state := v_state;
            error_message := v_msg;
            RETURN NEXT;
    END;
END;
$$;
