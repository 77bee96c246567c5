-- whk.can_send_again: whether a delivery may be sent again by a retry (whk.retry_deliveries, and
-- whk.reopen_deliveries before it brings a delivered one back from the history). Not for a deleted
-- webhook's delivery (whk.delete_webhook: nothing more is sent to an endpoint its owner removed, and no
-- claim would serve it), and only while its body exists: its own copy (a pinned major's rendering, a dead
-- letter's envelope) or its event in the outbox (the claim rebuilds the body from it); a delivery whose
-- outbox partition retention dropped, with no copy, cannot be sent again.
CREATE OR REPLACE FUNCTION whk.can_send_again(p_webhook_id bigint, p_payload jsonb, p_outbox_id bigint,
                                              p_event_created_at timestamptz)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk
AS $$
    SELECT NOT EXISTS (SELECT 1 FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id AND w.deleted_at IS NOT NULL)
           AND (p_payload IS NOT NULL
                OR EXISTS (SELECT 1 FROM whk.outbox o WHERE o.id = p_outbox_id AND o.created_at = p_event_created_at));
$$;
COMMENT ON FUNCTION whk.can_send_again(bigint, jsonb, bigint, timestamptz) IS
    'Whether a retry may send a delivery again: its webhook is not deleted and its body still exists.';
