-- Per-consumer outbound state shared by every dispatcher process: the token bucket and the daily quota.
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
