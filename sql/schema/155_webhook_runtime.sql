-- Per-webhook delivery state shared by every dispatcher process: circuit breaker, token bucket, failure
-- streak, fairness cursor. Kept out of whk_01_webhooks because it is rewritten on every claim and outcome,
-- and must never block an API edit of the webhook row.
CREATE TABLE whk.webhook_runtime (
    webhook_id           bigint           PRIMARY KEY REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    -- Circuit breaker (in SQL so every dispatcher moves it atomically; settings: whk/breaker.py): closed -> open after failure_threshold consecutive failures; open ->
    -- half_open when probe_at passes (one probe claimed, leased until probe_until); the probe's success
    -- closes it, its failure re-opens it for twice as long (capped by open_max_s).
    breaker_state        text             NOT NULL DEFAULT 'closed'
                                          CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    consecutive_failures integer          NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    -- Failed probes since the breaker last closed: each one doubles the open period (up to open_max_s).
    failed_probes        integer          NOT NULL DEFAULT 0 CHECK (failed_probes >= 0),
    opened_at            timestamptz,
    probe_at             timestamptz,
    probe_until          timestamptz,
    -- Start of the current unbroken failure streak (NULL after any success): drives auto-disable.
    failing_since        timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    -- Token bucket (requests per second); NULL tokens = a full bucket.
    tokens               double precision,
    tokens_at            timestamptz      NOT NULL DEFAULT now(),
    -- Fairness cursor: the claim serves webhooks least recently served first.
    last_claim_at        timestamptz
);
COMMENT ON TABLE whk.webhook_runtime IS
    'Per-webhook delivery state shared by all dispatchers: breaker, token bucket, failure streak, fairness.';
