-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- Quarantined webhooks and those of a consumer that is not active wait for an operator, not for time:
-- they are left out. A consumer's quiet hours push its non-urgent webhooks' time to the window's end
-- (whk.quiet_hold_until), so a dispatcher does not wake for deliveries the claim would leave waiting.
-- The dispatcher sleeps until then (or a wake-up, or its poll interval, whichever comes first).
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and was parsed and planned at every
-- call (measured: ~0.45 ms of planning per call, the dispatcher asks up to ten times a second); PL/pgSQL
-- keeps the plan for the session.
CREATE OR REPLACE FUNCTION whk.next_wakeup()
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
-- The kept plan stays on its indexes, no JIT: the reason is given once, at whk.route_and_take.
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    RETURN (SELECT min(coalesce(whk.quiet_hold_until(a.quiet_hours, w.urgent, greatest(t.at, clock_timestamp())),
                                t.at))
    FROM whk.whk_01_webhooks w
    JOIN whk.webhook_runtime r ON r.webhook_id = w.id
    JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id AND a.status = 'active'
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS due FROM whk.delivery_queue d
        WHERE d.webhook_id = w.id AND d.status = 'pending'
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) n
    CROSS JOIN LATERAL (SELECT greatest(
               CASE WHEN w.delivery_mode = 'batch'
                    THEN n.due + make_interval(secs => w.batch_window_ms / 1000.0) ELSE n.due END,
               CASE WHEN r.breaker_state = 'open' THEN r.probe_at END,
               -- The rate clamped to its bounds, as in the claim: a denormal one overflows the division.
               CASE WHEN coalesce(w.rate_limit_per_second, 0) > 0 AND r.tokens IS NOT NULL AND r.tokens < 1
                    THEN r.tokens_at + make_interval(secs => least((1 - r.tokens)
                                                                   / least(greatest(w.rate_limit_per_second::double precision,
                                                                                    0.001), 1000000),
                                                                   86400))
               END) AS at) t
    WHERE w.status = 'active' AND w.deleted_at IS NULL AND w.quarantined_at IS NULL
      AND w.needs_secret_since IS NULL);
END;
$$;
