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
    last_claim_at        timestamptz,
    -- Trace flag (whk.trace_webhook): until trace_until the dispatchers log this webhook's requests and
    -- responses in detail, as WHK_DEBUG does for all. It reads the flag with the webhook's row, so it needs
    -- no restart and costs no query per event; it switches itself off, and a trace is at most a day long
    -- so a forgotten one cannot keep bodies flowing into production logs.
    trace_set_at         timestamptz,
    trace_until          timestamptz,
    CONSTRAINT webhook_runtime_trace_bounds CHECK (
        trace_until IS NULL
        OR (trace_set_at IS NOT NULL AND trace_until > trace_set_at
            AND trace_until <= trace_set_at + interval '24 hours'))
);
COMMENT ON TABLE whk.webhook_runtime IS
    'Per-webhook delivery state shared by all dispatchers: breaker, token bucket, failure streak, fairness.';
