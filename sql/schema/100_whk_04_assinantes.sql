-- Consumers (assinantes): the tenant. Every webhook, delivery and API key belongs to one consumer.
CREATE TABLE whk.whk_04_assinantes (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                    text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description             text,
    contact_name            text,
    contact_email           text        CHECK (contact_email IS NULL OR contact_email ~ '^[^@\s]+@[^@\s]+$'),
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'suspended', 'disabled')),
    -- Authentication settings for the API (key scopes, JWT subject mapping); never secrets.
    auth_settings           jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(auth_settings) = 'object'),
    -- Source addresses allowed to call the API for this consumer; empty = any.
    allowed_ips             cidr[]      NOT NULL DEFAULT '{}',
    -- Outbound delivery limits shared by all of the consumer's webhooks (NULL = unlimited). Bounded (here
    -- and in the API schema, docs/configuration.md lists them): the claim's token bucket multiplies the rate
    -- by elapsed seconds, and a denormal rate underflows that arithmetic.
    rate_limit_per_second   numeric     CHECK (rate_limit_per_second IS NULL
                                               OR rate_limit_per_second BETWEEN 0.001 AND 1000000),
    rate_limit_burst        integer     CHECK (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000),
    -- Inbound API limit per minute (NULL = the global default in whk_05_configuracoes).
    api_rate_limit_per_minute integer   CHECK (api_rate_limit_per_minute IS NULL
                                               OR api_rate_limit_per_minute BETWEEN 1 AND 1000000000),
    quota_deliveries_per_day bigint     CHECK (quota_deliveries_per_day IS NULL
                                               OR quota_deliveries_per_day BETWEEN 1 AND 1000000000),
    delivery_preferences    jsonb       NOT NULL DEFAULT '{}'::jsonb
                                        CHECK (jsonb_typeof(delivery_preferences) = 'object'),
    -- Quiet hours (docs/delivery.md, "Quiet hours"): {"time_zone": IANA name, "windows": [{"days": ["mon", …],
    -- "start": "22:00", "end": "07:00"}, …]}; NULL = none. Inside a window the deliveries of its webhooks that
    -- are not urgent wait, pending. Bounded by whk.quiet_hours_problem (sql/constraints/setting_bounds.sql).
    quiet_hours             jsonb,
    metadata                jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    -- Activity and usage, maintained in aggregate by the dispatcher (never per row in ERP commits).
    last_activity_at        timestamptz,
    usage_deliveries_total  bigint      NOT NULL DEFAULT 0,
    usage_deliveries_failed bigint      NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whk_04_assinantes_name_key UNIQUE (name)
);
COMMENT ON TABLE whk.whk_04_assinantes IS 'Consumers (tenants) with their auth settings, limits, quotas and usage.';
