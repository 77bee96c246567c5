-- Until when a consumer's quiet hours hold a webhook's deliveries at p_at: the end of the window in force
-- (whk.quiet_until), or NULL when nothing holds them (no quiet hours, an urgent webhook, or p_at outside
-- every window). The one rule of quiet hours: the claim (whk.claim_deliveries), routing (whk.route_and_take),
-- the round's due probe (whk.dispatch_round), the dispatcher's sleep (whk.next_wakeup), whk.explain and the
-- backlog-age alert all ask it, so they cannot disagree on which deliveries wait.
--
-- A plain SQL expression with no SET clause, so the planner inlines it into the caller's statement: the
-- hot-path plans (tests/db/test_steady_plans.py) keep their shape, and whk.quiet_until is called only for a
-- consumer that has quiet hours and a webhook that is not urgent. STABLE, as whk.quiet_until is. A quoted
-- body, not BEGIN ATOMIC (which would need whk.quiet_until to exist first): its one name is
-- schema-qualified, and it has no operator a search_path could redirect.
CREATE OR REPLACE FUNCTION whk.quiet_hold_until(p_quiet jsonb, p_urgent boolean, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_quiet IS NULL OR p_urgent THEN NULL::timestamptz
                ELSE whk.quiet_until(p_quiet, p_at) END
$$;
COMMENT ON FUNCTION whk.quiet_hold_until(jsonb, boolean, timestamptz) IS
    'Until when quiet hours hold a webhook''s deliveries at a moment (NULL: not held): the one quiet-hours rule.';
