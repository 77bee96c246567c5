-- whk.route_target_open: may routing create deliveries for this webhook at all, whatever the event? Its
-- webhook is active or paused and not deleted, not quarantined while routing (stage 'route': its data broke
-- the routing statement), and its consumer is active or suspended. Paused webhooks and suspended consumers
-- are routed to on purpose: their deliveries wait, pending, and go out in order once resumed; disabled
-- ones are not routed to (nothing accumulates for them).
--
-- One definition of the rule for whk.route_and_take (the fan-out) and whk.explain (which names why a
-- webhook would not get an event). SQL-standard body without a SET clause, so the planner inlines it into
-- the caller's query: the fan-out's plan is the same as with the conditions written out.
CREATE OR REPLACE FUNCTION whk.route_target_open(webhook_status text, deleted_at timestamptz,
                                                 quarantine_stage text, consumer_status text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT webhook_status IN ('active', 'paused') AND deleted_at IS NULL
           AND quarantine_stage IS DISTINCT FROM 'route'
           AND consumer_status IN ('active', 'suspended');
END;
COMMENT ON FUNCTION whk.route_target_open(text, timestamptz, text, text) IS
    'Routing rule: webhook active or paused, not deleted, not quarantined at routing; consumer active or suspended.';
