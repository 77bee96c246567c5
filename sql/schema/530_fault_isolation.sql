-- Fault isolation (docs/delivery.md, "Quarantine"). A webhook whose data makes a shared delivery statement
-- fail (routing, the claim, recording outcomes), or whose endpoint the SSRF guard refuses, is quarantined
-- (whk.quarantine_webhook): the dispatcher stops claiming for it, and for a routing fault stops routing to
-- it, so the set-based statements keep serving every other webhook. Orthogonal to status
-- (active/paused/disabled) and to the breaker: clearing it (whk.clear_webhook_quarantine, or a resume) puts
-- the webhook back where it was.
ALTER TABLE whk.whk_01_webhooks
    ADD COLUMN quarantined_at      timestamptz,
    ADD COLUMN quarantine_stage    text CHECK (quarantine_stage IN ('route', 'claim', 'record', 'ssrf')),
    ADD COLUMN quarantine_sqlstate text CHECK (quarantine_sqlstate ~ '^[0-9A-Z]{5}$'),
    ADD COLUMN quarantine_reason   text CHECK (length(quarantine_reason) <= 2000),
    ADD CONSTRAINT whk_01_webhooks_quarantine_stage_set CHECK ((quarantined_at IS NULL) = (quarantine_stage IS NULL));
COMMENT ON COLUMN whk.whk_01_webhooks.quarantined_at IS
    'Set when the webhook''s data broke a delivery statement or the SSRF guard refused it; the dispatcher skips it.';
-- Health lists the quarantined webhooks on every call: a tiny partial index.
CREATE INDEX whk_01_webhooks_quarantined_idx ON whk.whk_01_webhooks (id) WHERE quarantined_at IS NOT NULL;

-- What each dispatcher enforces and whether its rounds are failing (whk.dispatcher_heartbeat): health shows
-- dispatchers whose SSRF policy differs from their peers', and errors they cannot quarantine away.
ALTER TABLE whk.dispatchers
    ADD COLUMN ssrf_policy   text,
    ADD COLUMN ssrf_exempt   text[],
    ADD COLUMN last_error    text,
    ADD COLUMN last_error_at timestamptz;
