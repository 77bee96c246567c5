-- 0031 mock_scenarios: development mock endpoints play scripted scenarios, check signatures, stay bounded.
-- Adds whk.mock_scenarios (the script per mock name, shared by every API worker), the signature verdict
-- columns of whk.mock_requests, the bounded dev.mock_* settings that trim it (with their bounds in
-- whk.config_value_problem) and the new whk.mock_record. Development-only data; the new columns are
-- nullable, so adding them does not rewrite the table.
BEGIN;
SELECT whk.migration_begin(31, 'mock_scenarios');

ALTER TABLE whk.mock_requests
    ADD COLUMN webhook_id       bigint,
    ADD COLUMN signature_ok     boolean,
    ADD COLUMN signature_reason text CHECK (length(signature_reason) <= 1000);
COMMENT ON TABLE whk.mock_requests IS
    'Development mock endpoints: recent requests per mock name, bounded by the dev.mock_* settings (whk.mock_record trims).';
-- The retention trim deletes by age.
CREATE INDEX mock_requests_received_at_idx ON whk.mock_requests (received_at);

-- What a development mock endpoint answers, request by request (whk/mockscenario.py is the format and the
-- decision; the pytest plugin's receiver plays the same). Stored here, not in an API worker's memory, so
-- every worker agrees on the script and on how far it has got (served, advanced under the row lock).
-- The steps are parallel arrays (status, wait before answering, time over which the body is dripped) so
-- their bounds are plain CHECKs, the same as the API schema's.
CREATE TABLE whk.mock_scenarios (
    mock_name     text             PRIMARY KEY CHECK (mock_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    step_status   integer[]        NOT NULL DEFAULT '{}',
    step_delay_ms integer[]        NOT NULL DEFAULT '{}',
    step_drip_ms  integer[]        NOT NULL DEFAULT '{}',
    then_status   integer          NOT NULL DEFAULT 200 CHECK (then_status BETWEEN 200 AND 599),
    then_delay_ms integer          NOT NULL DEFAULT 0 CHECK (then_delay_ms BETWEEN 0 AND 30000),
    then_drip_ms  integer          NOT NULL DEFAULT 0 CHECK (then_drip_ms BETWEEN 0 AND 30000),
    -- Only compared with a hash-derived number in [0, 1), never used in arithmetic: no floor needed.
    fail_rate     double precision NOT NULL DEFAULT 0 CHECK (fail_rate >= 0 AND fail_rate <= 1),
    fail_status   integer          NOT NULL DEFAULT 503 CHECK (fail_status BETWEEN 200 AND 599),
    seed          integer          NOT NULL DEFAULT 0 CHECK (seed >= 0),
    -- Requests answered since the scenario was set: the next one is request number `served`.
    served        bigint           NOT NULL DEFAULT 0 CHECK (served >= 0),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT mock_scenarios_steps_bounds CHECK (
        cardinality(step_status) <= 100
        AND cardinality(step_delay_ms) = cardinality(step_status)
        AND cardinality(step_drip_ms) = cardinality(step_status)
        AND coalesce(array_ndims(step_status), 1) = 1
        AND array_position(step_status, NULL) IS NULL
        AND array_position(step_delay_ms, NULL) IS NULL
        AND array_position(step_drip_ms, NULL) IS NULL
        AND 200 <= ALL (step_status) AND 599 >= ALL (step_status)
        AND 0 <= ALL (step_delay_ms) AND 30000 >= ALL (step_delay_ms)
        AND 0 <= ALL (step_drip_ms) AND 30000 >= ALL (step_drip_ms))
);
COMMENT ON TABLE whk.mock_scenarios IS
    'Development mock endpoints: the scripted answers per mock name (steps, then, seeded random failures).';

ALTER TABLE whk.whk_05_configuracoes DROP CONSTRAINT whk_05_configuracoes_category_check;
ALTER TABLE whk.whk_05_configuracoes ADD CONSTRAINT whk_05_configuracoes_category_check
    CHECK (category IN ('retry', 'rate_limit', 'security', 'template', 'monitoring', 'delivery', 'dev'));

-- Why a global setting's value (whk_05_configuracoes) is refused, or NULL when it is fine. DBAs change these
-- with plain SQL, and the dispatcher and the API read them inside their arithmetic (token buckets, breaker
-- periods, the API's rate limit), so every numeric setting has bounds; keys WHK does not know are not
-- checked. `SELECT key, whk.config_value_problem(key, value) FROM whk.whk_05_configuracoes` lists problems.
CREATE OR REPLACE FUNCTION whk.config_value_problem(p_key text, p_value jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    CASE p_key
    WHEN 'retry.policy' THEN
        RETURN whk.retry_policy_problem(p_value);
    WHEN 'delivery.breaker' THEN
        RETURN whk.breaker_config_problem(p_value);
    WHEN 'rate_limit.webhook_default' THEN
        IF jsonb_typeof(p_value) <> 'object' THEN
            RETURN 'rate_limit.webhook_default must be a JSON object';
        END IF;
        SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
        FROM jsonb_object_keys(p_value - ARRAY['per_second', 'burst', 'max_in_flight']) AS k;
        IF v_unknown IS NOT NULL THEN
            RETURN format('unknown member %s (known: per_second, burst, max_in_flight)', v_unknown);
        END IF;
        RETURN coalesce(
            whk.setting_number_problem('per_second', p_value -> 'per_second', 0.001, 1000000, false, true),
            whk.setting_number_problem('burst', p_value -> 'burst', 1, 1000000, true, true),
            whk.setting_number_problem('max_in_flight', p_value -> 'max_in_flight', 1, 1000, true, true));
    WHEN 'rate_limit.api_per_minute' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 1000000000, true);
    WHEN 'security.signature_tolerance_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 31536000, true);
    WHEN 'security.rotation_grace_hours' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 720);
    WHEN 'security.max_old_keys' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 100, true);
    WHEN 'delivery.auto_disable_after_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 60, 31536000);
    WHEN 'delivery.response_body_max_bytes' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 0, 1048576, true);
    WHEN 'monitoring.oldest_pending_warn_s' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 604800);
    -- The development mock endpoints' table stays bounded (whk.mock_record trims by these).
    WHEN 'dev.mock_keep_per_name' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 10000, true);
    WHEN 'dev.mock_max_rows' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1000, 1000000, true);
    WHEN 'dev.mock_retention_hours' THEN
        RETURN whk.setting_number_problem(p_key, p_value, 1, 720);
    ELSE
        RETURN NULL;
    END CASE;
END;
$$;
COMMENT ON FUNCTION whk.config_value_problem(text, jsonb) IS
    'Why a whk_05_configuracoes value is out of bounds (NULL = fine; unknown keys are not checked).';

INSERT INTO whk.whk_05_configuracoes (key, category, value, description) VALUES
    ('dev.mock_keep_per_name', 'dev', '1000', 'Requests kept per development mock endpoint (newest first).'),
    ('dev.mock_max_rows', 'dev', '50000', 'Requests kept by all development mock endpoints together.'),
    ('dev.mock_retention_hours', 'dev', '24', 'Development mock requests older than this are deleted.')
ON CONFLICT (key) DO NOTHING;

DROP FUNCTION whk.mock_record(text, text, jsonb, text, integer, integer);
-- whk.mock_record: store one request received by a development mock endpoint, then keep the table bounded
-- whatever points at it (a forgotten mock with a busy webhook, or many mock names): the newest
-- dev.mock_keep_per_name requests of this mock, nothing older than dev.mock_retention_hours, and the newest
-- dev.mock_max_rows overall (settings in whk_05_configuracoes, bounded by whk.config_value_problem).
CREATE OR REPLACE FUNCTION whk.mock_record(
    p_name text, p_method text, p_headers jsonb, p_body text, p_body_size integer, p_status integer,
    p_webhook_id bigint DEFAULT NULL, p_signature_ok boolean DEFAULT NULL, p_signature_reason text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_id bigint;
    v_keep integer;
    v_max_rows integer;
    v_hours double precision;
BEGIN
    SELECT coalesce(max((c.value #>> '{}')::integer) FILTER (WHERE c.key = 'dev.mock_keep_per_name'), 1000),
           coalesce(max((c.value #>> '{}')::integer) FILTER (WHERE c.key = 'dev.mock_max_rows'), 50000),
           coalesce(max((c.value #>> '{}')::double precision)
                    FILTER (WHERE c.key = 'dev.mock_retention_hours'), 24)
      INTO v_keep, v_max_rows, v_hours
      FROM whk.whk_05_configuracoes c
     WHERE c.key IN ('dev.mock_keep_per_name', 'dev.mock_max_rows', 'dev.mock_retention_hours');

    INSERT INTO whk.mock_requests (mock_name, method, headers, body, body_size, replied_status,
                                   webhook_id, signature_ok, signature_reason)
    VALUES (p_name, p_method, p_headers, p_body, p_body_size, p_status,
            p_webhook_id, p_signature_ok, left(p_signature_reason, 1000))
    RETURNING id INTO v_id;

    DELETE FROM whk.mock_requests m
    WHERE m.mock_name = p_name
      AND m.id < (SELECT k.id FROM whk.mock_requests k
                  WHERE k.mock_name = p_name ORDER BY k.id DESC OFFSET v_keep - 1 LIMIT 1);
    DELETE FROM whk.mock_requests m
    WHERE m.received_at < now() - make_interval(secs => v_hours * 3600);
    DELETE FROM whk.mock_requests m
    WHERE m.id < (SELECT k.id FROM whk.mock_requests k ORDER BY k.id DESC OFFSET v_max_rows - 1 LIMIT 1);
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.mock_record(text, text, jsonb, text, integer, integer, bigint, boolean, text) IS
    'Record a request to a development mock endpoint with its signature verdict; trims by the dev.mock_* settings.';

COMMIT;
