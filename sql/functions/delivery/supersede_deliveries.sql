-- Supersede-by-key (docs/delivery.md, "Supersede by key"), run by whk.route_and_take after each routing batch
-- (p_outbox_ids: the events it routed). For every webhook with supersede_by_key (delayed mode only, see the
-- whk_01_webhooks_supersede_delayed CHECK), the newest delivery of each key among the ones just routed
-- supersedes the older deliveries of that (webhook, key) that are still pending and were never attempted:
-- they become 'superseded', a final state, with superseded_by naming the delivery that replaced them (kept,
-- not lost; visible in the API with status=superseded). The key is the delivery's ordering_key (the webhook's
-- ordering_key_path on the envelope, else the event key); a delivery without one is never superseded.
--
-- The replacement takes the earliest due time of what it replaces, so a key that keeps changing is sent at
-- most delay_seconds after its first unsent change, with the latest state: superseding never postpones.
--
-- Race with a claim: a delivery a dispatcher has claimed (in_flight, or locked by a claim that is about to
-- make it so) is never superseded. The UPDATE's status = 'pending' condition is checked again on the row's
-- latest version after waiting for the claim's lock, and a claim skips rows this statement has locked (SKIP
-- LOCKED), which after commit are superseded. A delivery that failed and waits for a retry (attempts > 0)
-- was sent once already and is left to its schedule.
--
-- Costs nothing when no webhook supersedes (one probe of a partial index); otherwise one index probe per
-- routed event (whk_03_entregas_outbox_idx) and one per key on the lane index.
CREATE OR REPLACE FUNCTION whk.supersede_deliveries(p_outbox_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_n   integer;
    v_ids bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.supersede_by_key AND w.deleted_at IS NULL) THEN
        RETURN 0;
    END IF;
    WITH fresh AS (
        SELECT DISTINCT ON (d.webhook_id, d.ordering_key) d.id, d.webhook_id, d.ordering_key, d.commit_seq
        FROM whk.whk_01_webhooks w
        JOIN whk.delivery_queue d ON d.webhook_id = w.id
        WHERE w.supersede_by_key AND w.deleted_at IS NULL
          AND d.outbox_id = ANY (p_outbox_ids) AND d.status = 'pending' AND d.ordering_key IS NOT NULL
        ORDER BY d.webhook_id, d.ordering_key, d.commit_seq DESC, d.id DESC
    ), gone AS (
        UPDATE whk.delivery_queue o
        SET status = 'superseded', superseded_by = f.id, updated_at = clock_timestamp()
        FROM fresh f
        WHERE o.webhook_id = f.webhook_id AND o.ordering_key = f.ordering_key
          AND o.status = 'pending' AND o.attempts = 0 AND o.commit_seq < f.commit_seq
        RETURNING o.id, f.id AS by_id, o.next_attempt_at
    ), moved AS (
        UPDATE whk.delivery_queue n
        SET next_attempt_at = least(n.next_attempt_at, g.first_due)
        FROM (SELECT x.by_id, min(x.next_attempt_at) AS first_due FROM gone x GROUP BY x.by_id) g
        WHERE n.id = g.by_id
    )
    SELECT count(*)::integer, array_agg(g.id) INTO v_n, v_ids FROM gone g;
    -- Superseded is final: those rows move to the history.
    IF v_n > 0 THEN
        PERFORM whk.archive_deliveries(v_ids);
    END IF;
    RETURN v_n;
END;
$$;
COMMENT ON FUNCTION whk.supersede_deliveries(bigint[]) IS
    'Supersede-by-key: mark older never-attempted pending deliveries of a key superseded by the newest one.';
