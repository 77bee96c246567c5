-- Alerts (alertas): conditions over delivery metrics, channels, escalation and throttling.
CREATE TABLE whk.whk_06_alertas (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id       bigint      REFERENCES whk.whk_04_assinantes (id),
    name              text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description       text,
    severity          text        NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    -- {"metric": "failure_rate", "operator": ">", "threshold": 0.2, "window_s": 300, "webhook_id": 1}
    condition         jsonb       NOT NULL CHECK (jsonb_typeof(condition) = 'object' AND condition ? 'metric'),
    -- [{"type": "webhook"|"slack"|"email"|"pagerduty", "target": "..."}]
    channels          jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(channels) = 'array'),
    escalation        jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(escalation) = 'array'),
    throttle_seconds  integer     NOT NULL DEFAULT 300 CHECK (throttle_seconds BETWEEN 0 AND 86400),
    enabled           boolean     NOT NULL DEFAULT true,
    state             text        NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'firing')),
    last_triggered_at timestamptz,
    trigger_count     bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE whk.whk_06_alertas IS 'Alert definitions with conditions, channels, escalation and throttling.';

-- Activation history of each alert.
CREATE TABLE whk.whk_06_alertas_historico (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint      NOT NULL REFERENCES whk.whk_06_alertas (id) ON DELETE CASCADE,
    triggered_at timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    value        double precision,
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    notified     jsonb       NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX whk_06_alertas_historico_alert_idx ON whk.whk_06_alertas_historico (alert_id, triggered_at DESC);
