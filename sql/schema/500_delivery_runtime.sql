-- Delivery runtime state shared by every dispatcher process (migration 0005): circuit breakers, token
-- buckets, fairness cursor and the indexes the claim relies on. Kept out of the seed tables because it is
-- rewritten on every claim and outcome, and must never block an API edit of the webhook row.

-- Manual and bulk retries restart the retry schedule without renumbering attempts: the schedule uses
-- attempts - schedule_offset, the attempt log keeps increasing attempt numbers.
ALTER TABLE whk.whk_03_entregas
    ADD COLUMN schedule_offset integer NOT NULL DEFAULT 0 CHECK (schedule_offset >= 0);

-- Per-webhook in-flight cap: counted on every claim of the webhook.
CREATE INDEX whk_03_entregas_in_flight_idx ON whk.whk_03_entregas (webhook_id) WHERE status = 'in_flight';
-- Ordered lanes: the head of each (webhook, key) lane is the lowest commit_seq not yet finished.
CREATE INDEX whk_03_entregas_lane_idx ON whk.whk_03_entregas (webhook_id, ordering_key, commit_seq, id)
    WHERE status IN ('pending', 'in_flight', 'awaiting_ack') AND ordering_key IS NOT NULL;
-- Parked deliveries (disabled webhook, 410) come back when the webhook is resumed.
CREATE INDEX whk_03_entregas_parked_idx ON whk.whk_03_entregas (webhook_id) WHERE status = 'parked';

CREATE TABLE whk.webhook_runtime (
    webhook_id           bigint           PRIMARY KEY REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    -- Circuit breaker (the state machine of dispatcher/breaker.py, applied in SQL so every dispatcher
    -- moves it atomically): closed -> open after failure_threshold consecutive failures; open ->
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

CREATE TABLE whk.consumer_runtime (
    consumer_id bigint           PRIMARY KEY REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    tokens      double precision,
    tokens_at   timestamptz      NOT NULL DEFAULT now(),
    -- Daily delivery quota (whk_04_assinantes.quota_deliveries_per_day), counted in requests.
    quota_day   date             NOT NULL DEFAULT current_date,
    quota_used  bigint           NOT NULL DEFAULT 0 CHECK (quota_used >= 0)
);
COMMENT ON TABLE whk.consumer_runtime IS
    'Per-consumer outbound rate limit bucket and daily quota, shared by all dispatchers.';
