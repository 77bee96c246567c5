-- Find and quarantine the webhooks whose data makes a dispatcher round fail, so the next round serves
-- everyone else. The dispatcher calls it only after whk.dispatch_round failed with an error a webhook's
-- data can cause (see whk.fault_probe for the classes): the happy path never pays for it.
--
-- For each stage (route, then claim) it probes the stage with every candidate webhook (whk.fault_probe,
-- rolled back). If that fails, it probes with none: a failure then is not about a webhook (an event, the
-- global configuration) and is reported with webhook_id NULL. Otherwise it bisects the candidates, probing
-- halves of a failing set, down to single webhooks: O(k log n) probes for k culprits among n candidates.
-- Candidates: for route, active webhooks not quarantined at that stage; for claim, active unquarantined
-- webhooks (a claim probe routes first, as the round did: the deliveries that broke the claim may have
-- been routed in the failed round itself, and rolled back with it).
--
-- When routing fails for no webhook in particular (a poison event), the claim is probed alone, so that the
-- routing fault is not blamed on the claim: the dispatcher then keeps claiming while routing is off.
--
-- Culprits are quarantined (whk.quarantine_webhook, stage and SQLSTATE recorded, audited as
-- 'whk-dispatcher:<id>'), EXCEPT when every candidate of a stage (two or more) fails on its own: that is
-- a global fault (for example a poison global default), reported with webhook_id NULL and nothing
-- quarantined. (All of one consumer's webhooks failing on a poison consumer setting looks the same while
-- they are the only candidates; they are quarantined as soon as any other webhook passes the probe.)
-- A failing set whose halves both pass (a fault of the combination) is reported unattributed too.
--
-- Returns one row per culprit (webhook_id, stage, sqlstate, message) and one row per stage that failed
-- without a culprit (webhook_id NULL). No row: the round's error did not reproduce.
CREATE OR REPLACE FUNCTION whk.isolate_round_faults(p_dispatcher text, p_route_limit integer,
                                                    p_lease_s double precision)
RETURNS TABLE (webhook_id bigint, stage text, sqlstate text, message text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
#variable_conflict use_column
DECLARE
    v_stage  text;
    v_all    bigint[];
    v_set    bigint[];
    v_half   bigint[];
    v_queue  jsonb;
    v_item   jsonb;
    v_found  jsonb;
    v_n      integer;
    v_h      integer;
    p        record;
    q        record;
    v_any    boolean;
    v_probe  text;
    v_routes boolean := true;  -- routing fails for no webhook in particular: probe the claim alone
BEGIN
    FOREACH v_stage IN ARRAY ARRAY['route', 'claim'] LOOP
        IF v_stage = 'route' THEN
            SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_all
            FROM whk.whk_01_webhooks w
            WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantine_stage IS DISTINCT FROM 'route';
        ELSE
            SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_all
            FROM whk.whk_01_webhooks w
            WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL;
        END IF;

        v_probe := CASE WHEN v_stage = 'claim' AND NOT v_routes THEN 'claim_alone' ELSE v_stage END;
        SELECT * INTO p FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, v_all);
        CONTINUE WHEN NOT FOUND;  -- this stage runs cleanly
        SELECT * INTO q FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, '{}');
        IF FOUND THEN
            -- Fails with no webhook at all: not a webhook's fault.
            v_routes := v_routes AND v_stage <> 'route';
            RETURN QUERY SELECT NULL::bigint, v_stage, q.error_state, q.error_message;
            CONTINUE;
        END IF;

        -- Bisect: the queue holds failing sets with their error; single webhooks found are the culprits.
        v_queue := jsonb_build_array(jsonb_build_object('ids', to_jsonb(v_all), 'state', p.error_state,
                                                        'msg', p.error_message));
        v_found := '[]';
        WHILE jsonb_array_length(v_queue) > 0 LOOP
            v_item := v_queue -> 0;
            v_queue := v_queue - 0;
            v_set := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'ids')::bigint);
            v_n := cardinality(v_set);
            IF v_n = 1 THEN
                v_found := v_found || jsonb_build_array(v_item);
                CONTINUE;
            END IF;
            v_any := false;
            FOR v_h IN 1 .. 2 LOOP
                v_half := CASE WHEN v_h = 1 THEN v_set[1 : v_n / 2] ELSE v_set[v_n / 2 + 1 : v_n] END;
                SELECT * INTO q FROM whk.fault_probe(v_probe, p_dispatcher, p_route_limit, p_lease_s, v_half);
                IF FOUND THEN
                    v_any := true;
                    v_queue := v_queue || jsonb_build_array(jsonb_build_object(
                        'ids', to_jsonb(v_half), 'state', q.error_state, 'msg', q.error_message));
                END IF;
            END LOOP;
            IF NOT v_any THEN
                -- Fails only as a whole: a fault of the combination, not of one webhook.
                v_routes := v_routes AND v_stage <> 'route';
                RETURN QUERY SELECT NULL::bigint, v_stage, v_item ->> 'state', v_item ->> 'msg';
            END IF;
        END LOOP;

        IF jsonb_array_length(v_found) = cardinality(v_all) AND cardinality(v_all) >= 2 THEN
            -- Every candidate fails on its own: a global fault, not theirs.
            v_routes := v_routes AND v_stage <> 'route';
            RETURN QUERY SELECT NULL::bigint, v_stage, p.error_state, p.error_message;
            CONTINUE;
        END IF;
        FOR v_item IN SELECT e FROM jsonb_array_elements(v_found) e LOOP
            PERFORM whk.quarantine_webhook((v_item -> 'ids' ->> 0)::bigint, v_stage, v_item ->> 'msg',
                                           v_item ->> 'state', 'whk-dispatcher:' || p_dispatcher);
            RETURN QUERY SELECT (v_item -> 'ids' ->> 0)::bigint, v_stage, v_item ->> 'state', v_item ->> 'msg';
        END LOOP;
    END LOOP;
END;
$$;
