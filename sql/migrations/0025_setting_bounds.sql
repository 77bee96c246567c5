-- 0025 setting_bounds: every number a user, a tenant or a DBA can set has bounds in SQL, as in the API schema.
-- Why: a webhook's or consumer's rate_limit_per_second of 5e-324 (the API took any number > 0) made the token
-- bucket in whk.claim_deliveries raise `value out of range: underflow` on every claim, and the dispatcher
-- exited; the row survived, so it died again on every start. Numeric columns get two-sided bounds (rates
-- 0.001..1,000,000/s, bursts 1..1,000,000, quotas 1..10^9, ...); JSON settings (retry_policy, breaker_config,
-- whk_05_configuracoes values, alert conditions) get CHECKs through whk.*_problem functions that name the
-- member at fault. The full list is in docs/configuration.md ("Bounds of every setting").
-- The claim also clamps rates to the bounds before its arithmetic, never casts a quota above 2^31 to integer,
-- the wake-up time divides by the clamped rate, the breaker's doubling stops at 2^30 (it overflowed after
-- 1,023 failed probes) and the API's GCRA limit is at least 1 (a setting of 0 divided by zero).
-- Safe for existing data: rows outside the new bounds stop the migration before anything changes, named
-- with their problem (fix them, then run 0025 again).
-- Locks: ALTER TABLE ... ADD CONSTRAINT CHECK takes ACCESS EXCLUSIVE on whk_01_webhooks, whk_04_assinantes,
-- whk_05_configuracoes and whk_06_alertas while it scans them (small tables: milliseconds).
BEGIN;
SELECT whk.migration_begin(25, 'setting_bounds');

-- Why one number of a JSON setting is out of its bounds, or NULL when it is fine (an absent member is fine).
-- The CHECKs on JSON settings (retry policies, breaker settings, global settings, alert conditions) are built
-- from it: the dispatcher's claim and outcome statements cast these members (::integer, ::double precision)
-- inside their arithmetic, so a string, a fraction where an integer is read, or a value outside its bounds
-- (a denormal rate underflows, a huge one overflows) must never reach a row. Integers must be written as
-- integers (5, not 5.0): `(x ->> 'k')::integer` refuses '5.0'.
CREATE OR REPLACE FUNCTION whk.setting_number_problem(p_name text, p_value jsonb, p_min numeric, p_max numeric,
                                                      p_integer boolean DEFAULT false,
                                                      p_nullable boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    IF p_value IS NULL OR (p_nullable AND jsonb_typeof(p_value) = 'null') THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_value) <> 'number' OR (p_integer AND p_value::text !~ '^-?[0-9]+$') THEN
        RETURN format('%s must be %s%s', p_name, CASE WHEN p_integer THEN 'an integer' ELSE 'a number' END,
                      CASE WHEN p_nullable THEN ' or null' ELSE '' END);
    END IF;
    IF p_value::numeric < p_min OR p_value::numeric > p_max THEN
        RETURN format('%s must be between %s and %s, got %s', p_name, p_min, p_max, left(p_value::text, 40));
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.setting_number_problem(text, jsonb, numeric, numeric, boolean, boolean) IS
    'Why a JSON setting''s number is out of bounds (NULL = fine); the building block of the JSON setting CHECKs.';

-- Why a retry policy (whk_01_webhooks.retry_policy, whk_05_configuracoes 'retry.policy') is refused, or NULL
-- when it is fine. The bounds are the API's (api/webhooks/schemas.py RetryPolicy) and the dispatcher's
-- (dispatcher/retry.py), so a policy written with plain SQL is held to what the API would accept; members
-- may be left out (the dispatcher lays a partial policy over the global one). STRICT: NULL = no override.
CREATE OR REPLACE FUNCTION whk.retry_policy_problem(p_policy jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    IF jsonb_typeof(p_policy) <> 'object' THEN
        RETURN 'a retry policy must be a JSON object';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_policy - ARRAY['schedule_s', 'jitter', 'throttle_floor_s', 'retry_after_cap_factor',
                                            'retry_blocked']) AS k;
    IF v_unknown IS NOT NULL THEN
        RETURN format('unknown member %s (known: schedule_s, jitter, throttle_floor_s, retry_after_cap_factor, '
                      'retry_blocked)', v_unknown);
    END IF;
    IF p_policy ? 'schedule_s'
       AND (jsonb_typeof(p_policy -> 'schedule_s') <> 'array' OR jsonb_array_length(p_policy -> 'schedule_s') > 30) THEN
        RETURN 'schedule_s must be a list of at most 30 delays in seconds';
    END IF;
    RETURN coalesce(
        (SELECT s.problem
         FROM (SELECT whk.setting_number_problem(format('schedule_s[%s]', e.i - 1), e.v, 0.001, 604800) AS problem, e.i
               FROM jsonb_array_elements(p_policy -> 'schedule_s') WITH ORDINALITY AS e (v, i)) s
         WHERE s.problem IS NOT NULL
         ORDER BY s.i LIMIT 1),
        whk.setting_number_problem('jitter', p_policy -> 'jitter', 0, 0.99),
        whk.setting_number_problem('throttle_floor_s', p_policy -> 'throttle_floor_s', 0, 86400),
        whk.setting_number_problem('retry_after_cap_factor', p_policy -> 'retry_after_cap_factor', 1, 100),
        CASE WHEN jsonb_typeof(p_policy -> 'retry_blocked') <> 'boolean' THEN 'retry_blocked must be a boolean' END);
END;
$$;
COMMENT ON FUNCTION whk.retry_policy_problem(jsonb) IS
    'Why a retry policy is out of bounds (NULL = fine): schedule_s <= 30 delays of 0.001..604800 s, jitter 0..0.99, ...';

-- Why circuit-breaker settings (whk_01_webhooks.breaker_config, whk_05_configuracoes 'delivery.breaker') are
-- refused, or NULL when they are fine. whk.record_outcomes reads failure_threshold as an integer and the open
-- periods as seconds it multiplies and doubles, so each has bounds: failure_threshold 1..1000,
-- open_seconds (or its alias open_s) 0.001..86400, open_max_s 0.001..604800, half_open_probes 1..100.
-- Members may be left out (the global setting, then the built-in default, applies). STRICT: NULL = no override.
CREATE OR REPLACE FUNCTION whk.breaker_config_problem(p_config jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_unknown text;
BEGIN
    IF jsonb_typeof(p_config) <> 'object' THEN
        RETURN 'breaker settings must be a JSON object';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_config - ARRAY['failure_threshold', 'open_seconds', 'open_s', 'open_max_s',
                                            'half_open_probes']) AS k;
    IF v_unknown IS NOT NULL THEN
        RETURN format('unknown member %s (known: failure_threshold, open_seconds, open_s, open_max_s, '
                      'half_open_probes)', v_unknown);
    END IF;
    RETURN coalesce(
        whk.setting_number_problem('failure_threshold', p_config -> 'failure_threshold', 1, 1000, true),
        whk.setting_number_problem('open_seconds', p_config -> 'open_seconds', 0.001, 86400),
        whk.setting_number_problem('open_s', p_config -> 'open_s', 0.001, 86400),
        whk.setting_number_problem('open_max_s', p_config -> 'open_max_s', 0.001, 604800),
        whk.setting_number_problem('half_open_probes', p_config -> 'half_open_probes', 1, 100, true));
END;
$$;
COMMENT ON FUNCTION whk.breaker_config_problem(jsonb) IS
    'Why circuit-breaker settings are out of bounds (NULL = fine); see the function''s header for the bounds.';

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
    ELSE
        RETURN NULL;
    END CASE;
END;
$$;
COMMENT ON FUNCTION whk.config_value_problem(text, jsonb) IS
    'Why a whk_05_configuracoes value is out of bounds (NULL = fine; unknown keys are not checked).';

-- Why an alert's condition or escalation (whk_06_alertas) is refused, or NULL when they are fine. The bounds
-- are the API's (api/monitoring/schemas.py): threshold 0..1e12, window_s 60..604800 s, webhook_id a positive
-- bigint, every escalation step's after_s 60..604800 s. The alert queries (api/monitoring) read these numbers into
-- interval and comparison arithmetic, so SQL-written alerts are held to the same bounds.
CREATE OR REPLACE FUNCTION whk.alert_settings_problem(p_condition jsonb, p_escalation jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
BEGIN
    RETURN coalesce(
        CASE WHEN jsonb_typeof(p_condition) = 'object' THEN coalesce(
            whk.setting_number_problem('condition.threshold', p_condition -> 'threshold', 0, 1e12),
            whk.setting_number_problem('condition.window_s', p_condition -> 'window_s', 60, 604800, true),
            whk.setting_number_problem('condition.webhook_id', p_condition -> 'webhook_id', 1, 9223372036854775807,
                                       true, true)) END,
        CASE WHEN jsonb_typeof(p_escalation) = 'array' THEN
            (SELECT s.problem
             FROM (SELECT CASE WHEN jsonb_typeof(e.v) <> 'object' THEN format('escalation[%s] must be an object', e.i - 1)
                               ELSE whk.setting_number_problem(format('escalation[%s].after_s', e.i - 1), e.v -> 'after_s',
                                                               60, 604800, true) END AS problem, e.i
                   FROM jsonb_array_elements(p_escalation) WITH ORDINALITY AS e (v, i)) s
             WHERE s.problem IS NOT NULL
             ORDER BY s.i LIMIT 1) END);
END;
$$;
COMMENT ON FUNCTION whk.alert_settings_problem(jsonb, jsonb) IS
    'Why an alert''s condition or escalation numbers are out of bounds (NULL = fine).';

-- Refuse, naming the rows and their problem, rather than fail on a CHECK with a message a DBA has to decode.
DO $$
DECLARE
    r       record;
    v_count bigint;
    v_rows  text;
    v_all   text[] := '{}';
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('whk.whk_04_assinantes', 'id', $p$CASE WHEN NOT (rate_limit_per_second IS NULL OR rate_limit_per_second BETWEEN 0.001 AND 1000000) THEN format('rate_limit_per_second = %s (bounds: null or 0.001..1000000)', rate_limit_per_second) END$p$),
        ('whk.whk_04_assinantes', 'id', $p$CASE WHEN NOT (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000) THEN format('rate_limit_burst = %s (bounds: null or 1..1000000)', rate_limit_burst) END$p$),
        ('whk.whk_04_assinantes', 'id', $p$CASE WHEN NOT (api_rate_limit_per_minute IS NULL OR api_rate_limit_per_minute BETWEEN 1 AND 1000000000) THEN format('api_rate_limit_per_minute = %s (bounds: null or 1..1000000000)', api_rate_limit_per_minute) END$p$),
        ('whk.whk_04_assinantes', 'id', $p$CASE WHEN NOT (quota_deliveries_per_day IS NULL OR quota_deliveries_per_day BETWEEN 1 AND 1000000000) THEN format('quota_deliveries_per_day = %s (bounds: null or 1..1000000000)', quota_deliveries_per_day) END$p$),
        ('whk.whk_01_webhooks', 'id', $p$CASE WHEN NOT (payload_version IS NULL OR payload_version BETWEEN 1 AND 1000) THEN format('payload_version = %s (bounds: null or 1..1000)', payload_version) END$p$),
        ('whk.whk_01_webhooks', 'id', $p$CASE WHEN NOT (rate_limit_per_second IS NULL OR rate_limit_per_second BETWEEN 0.001 AND 1000000) THEN format('rate_limit_per_second = %s (bounds: null or 0.001..1000000)', rate_limit_per_second) END$p$),
        ('whk.whk_01_webhooks', 'id', $p$CASE WHEN NOT (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000) THEN format('rate_limit_burst = %s (bounds: null or 1..1000000)', rate_limit_burst) END$p$),
        ('whk.whk_01_webhooks', 'id', $p$CASE WHEN NOT (ack_timeout_seconds BETWEEN 1 AND 2592000) THEN format('ack_timeout_seconds = %s (bounds: 1..2592000)', ack_timeout_seconds) END$p$),
        ('whk.whk_06_alertas', 'id', $p$CASE WHEN NOT (throttle_seconds BETWEEN 0 AND 86400) THEN format('throttle_seconds = %s (bounds: 0..86400)', throttle_seconds) END$p$),
        ('whk.whk_01_webhooks', 'id', $p$'retry_policy: ' || whk.retry_policy_problem(retry_policy)$p$),
        ('whk.whk_01_webhooks', 'id', $p$'breaker_config: ' || whk.breaker_config_problem(breaker_config)$p$),
        ('whk.whk_05_configuracoes', 'key', $p$whk.config_value_problem(key, value)$p$),
        ('whk.whk_06_alertas', 'id', $p$whk.alert_settings_problem(condition, escalation)$p$)
    ) AS t (tbl, key, problem)
    LOOP
        EXECUTE format('SELECT count(*), string_agg(s.k || '': '' || s.p, ''; '' ORDER BY s.n) FILTER (WHERE s.n <= 10)'
                       ' FROM (SELECT %s::text AS k, %s AS p, row_number() OVER (ORDER BY %s) AS n'
                       '       FROM %s WHERE (%s) IS NOT NULL) s',
                       r.key, r.problem, r.key, r.tbl, r.problem)
            INTO v_count, v_rows;
        IF v_count > 0 THEN
            v_all := v_all || format('%s (%s rows; %s %s)', r.tbl, v_count, r.key, v_rows);
        END IF;
    END LOOP;
    IF cardinality(v_all) > 0 THEN
        RAISE EXCEPTION 'settings outside their new bounds: %', array_to_string(v_all, ' | ')
            USING ERRCODE = 'check_violation',
                  HINT = 'Change each row named to a value within its bounds (docs/configuration.md, "Bounds of '
                         'every setting"; NULL where a setting may be unset), then run 0025 again.';
    END IF;
END;
$$;

-- Numeric columns: two-sided bounds (the same names as the one-sided checks they replace).
ALTER TABLE whk.whk_04_assinantes
    DROP CONSTRAINT whk_04_assinantes_rate_limit_per_second_check,
    ADD CONSTRAINT whk_04_assinantes_rate_limit_per_second_check CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second BETWEEN 0.001 AND 1000000),
    DROP CONSTRAINT whk_04_assinantes_rate_limit_burst_check,
    ADD CONSTRAINT whk_04_assinantes_rate_limit_burst_check CHECK (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000),
    DROP CONSTRAINT whk_04_assinantes_api_rate_limit_per_minute_check,
    ADD CONSTRAINT whk_04_assinantes_api_rate_limit_per_minute_check CHECK (api_rate_limit_per_minute IS NULL OR api_rate_limit_per_minute BETWEEN 1 AND 1000000000),
    DROP CONSTRAINT whk_04_assinantes_quota_deliveries_per_day_check,
    ADD CONSTRAINT whk_04_assinantes_quota_deliveries_per_day_check CHECK (quota_deliveries_per_day IS NULL OR quota_deliveries_per_day BETWEEN 1 AND 1000000000);
ALTER TABLE whk.whk_01_webhooks
    DROP CONSTRAINT whk_01_webhooks_payload_version_check,
    ADD CONSTRAINT whk_01_webhooks_payload_version_check CHECK (payload_version IS NULL OR payload_version BETWEEN 1 AND 1000),
    DROP CONSTRAINT whk_01_webhooks_rate_limit_per_second_check,
    ADD CONSTRAINT whk_01_webhooks_rate_limit_per_second_check CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second BETWEEN 0.001 AND 1000000),
    DROP CONSTRAINT whk_01_webhooks_rate_limit_burst_check,
    ADD CONSTRAINT whk_01_webhooks_rate_limit_burst_check CHECK (rate_limit_burst IS NULL OR rate_limit_burst BETWEEN 1 AND 1000000),
    DROP CONSTRAINT whk_01_webhooks_ack_timeout_seconds_check,
    ADD CONSTRAINT whk_01_webhooks_ack_timeout_seconds_check CHECK (ack_timeout_seconds BETWEEN 1 AND 2592000);
ALTER TABLE whk.whk_06_alertas
    DROP CONSTRAINT whk_06_alertas_throttle_seconds_check,
    ADD CONSTRAINT whk_06_alertas_throttle_seconds_check CHECK (throttle_seconds BETWEEN 0 AND 86400);

-- JSON settings: CHECKs through the functions above (sql/constraints/setting_bounds.sql).
ALTER TABLE whk.whk_01_webhooks
    ADD CONSTRAINT whk_01_webhooks_retry_policy_bounds CHECK (whk.retry_policy_problem(retry_policy) IS NULL),
    ADD CONSTRAINT whk_01_webhooks_breaker_config_bounds CHECK (whk.breaker_config_problem(breaker_config) IS NULL);
ALTER TABLE whk.whk_05_configuracoes
    ADD CONSTRAINT whk_05_configuracoes_value_bounds CHECK (whk.config_value_problem(key, value) IS NULL);
ALTER TABLE whk.whk_06_alertas
    ADD CONSTRAINT whk_06_alertas_settings_bounds CHECK (whk.alert_settings_problem(condition, escalation) IS NULL);

-- whk.config_value_refuse: a global setting written out of bounds with plain SQL (the DBA's interface to
-- whk_05_configuracoes) is refused with what is wrong and where the bounds are, rather than with the bare
-- CHECK violation of whk_05_configuracoes_value_bounds (which stays, and names the same constraint).
CREATE OR REPLACE FUNCTION whk.config_value_refuse()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_problem text := whk.config_value_problem(NEW.key, NEW.value);
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk_05_configuracoes %: %', NEW.key, v_problem
            USING ERRCODE = 'check_violation', SCHEMA = 'whk', TABLE = 'whk_05_configuracoes',
                  CONSTRAINT = 'whk_05_configuracoes_value_bounds',
                  HINT = 'Every setting''s bounds: docs/configuration.md, "Bounds of every setting". '
                         'SELECT whk.config_value_problem(key, value) checks a value before it is written.';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.config_value_refuse() IS
    'Trigger: refuse an out-of-bounds whk_05_configuracoes value naming the problem (see config_value_problem).';

CREATE TRIGGER whk_05_configuracoes_bounds
    BEFORE INSERT OR UPDATE OF key, value ON whk.whk_05_configuracoes
    FOR EACH ROW EXECUTE FUNCTION whk.config_value_refuse();

-- Claim due deliveries for one dispatcher, fairly across webhooks, honouring every shared limit.
--
-- p_limit is the number of HTTP requests the caller can start now (a batch is one request). Webhooks with
-- due work are visited least-recently-served first; for each one the claim walks ITS OWN due index
-- (webhook_id, next_attempt_at, id) WHERE pending, so one endpoint's backlog of millions never delays
-- another endpoint's fresh event (a global FIFO would). The webhook's runtime row is locked SKIP LOCKED:
-- two dispatchers never claim for the same webhook at the same moment, so token buckets, in-flight caps
-- and half-open probes are exact across processes.
--
-- Per webhook the number of requests is the least of: what is left of p_limit, max_in_flight minus the
-- requests already in flight, the webhook's token bucket, the consumer's token bucket and daily quota,
-- and 1 for a half-open breaker (the probe). An open breaker claims nothing, so its deliveries wait
-- (they are not dead-lettered early).
--
-- Modes: immediate and delayed take due rows in (next_attempt_at, id) order; ordered takes only lane heads
-- (the lowest commit_seq of each key not yet delivered, dead or parked), so a retrying head blocks its own
-- key and nothing else; batch waits until batch_size rows are due or the oldest has waited batch_window_ms,
-- then claims up to batch_size rows under one batch_id.
--
-- Claimed rows become in_flight with a lease; an expired lease is reclaimed by whk.reclaim_expired_leases.
--
-- p_finished (migration 0022): deliveries of p_dispatcher whose request has ended but whose outcome is not
-- recorded yet (the dispatcher writes outcomes in groups). They are still in_flight here, but no longer on
-- the wire, so the in-flight cap does not count them: max_in_flight limits concurrent requests, not the
-- bookkeeping behind them. (Measured before: a webhook at the default max_in_flight of 10 drained at ~600
-- events/s, its requests waiting for earlier outcomes to be written.) The dispatcher lists only SUCCESSFUL
-- requests: after a failure the webhook waits for it to be written, so the breaker and the failure streak
-- always see it before the next request. Lanes stay blocked until the outcome is recorded: a retry must
-- not be overtaken.
CREATE OR REPLACE FUNCTION whk.claim_deliveries(p_dispatcher text, p_limit integer, p_lease_s double precision,
                                                p_finished bigint[] DEFAULT '{}')
RETURNS TABLE (delivery_id bigint, webhook_id bigint, event_id uuid, event_type text, attempts integer,
               schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz := clock_timestamp();
    v_lease      timestamptz := clock_timestamp() + make_interval(secs => p_lease_s);
    v_left       integer := p_limit;
    v_defaults   jsonb := coalesce(whk.delivery_config('rate_limit.webhook_default'), '{}'::jsonb);
    w            record;
    c            record;
    v_req        integer;
    v_in_flight  integer;
    v_num        numeric;
    v_rate       double precision;
    v_burst      double precision;
    v_tokens     double precision;
    v_ctokens    double precision;
    v_ids        bigint[];
    v_requests   integer;
    v_batch      uuid;
    v_due        integer;
    v_oldest     timestamptz;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;

    FOR w IN
        SELECT wh.id, wh.consumer_id, wh.delivery_mode, wh.batch_size, wh.batch_window_ms, wh.max_in_flight,
               wh.rate_limit_per_second, wh.rate_limit_burst,
               r.breaker_state, r.probe_at, r.probe_until, r.tokens, r.tokens_at
        FROM whk.whk_01_webhooks wh
        JOIN whk.webhook_runtime r ON r.webhook_id = wh.id
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL
          -- One probe of the webhook's due index. OFFSET 0 keeps the EXISTS a per-webhook probe: flattened
          -- into a semi-join, the generic plan read every due delivery of every webhook and grouped them by
          -- webhook (measured in a 20,000-event drain: ~3 ms per claim, growing with the backlog).
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                      OFFSET 0)
        ORDER BY r.last_claim_at NULLS FIRST, wh.id
        FOR UPDATE OF r SKIP LOCKED
    LOOP
        EXIT WHEN v_left <= 0;

        -- Circuit breaker: open = nothing until probe_at, then exactly one probe (half-open).
        v_req := v_left;
        IF w.breaker_state = 'open' THEN
            CONTINUE WHEN w.probe_at > v_now;
            v_req := 1;
        ELSIF w.breaker_state = 'half_open' THEN
            CONTINUE WHEN w.probe_until > v_now;
            v_req := 1;
        END IF;

        -- In-flight cap, counted in requests (a batch in flight is one request), less the caller's finished
        -- ones (p_finished), found by primary key. (Until migration 0024 each in-flight row was compared with
        -- the whole array, `d.id <> ALL (p_finished)`: a parameter array is not hashed, so in-flight x
        -- finished comparisons; a claim with 1,000 in flight and 500 finished took 4.6 ms, now 3.1.) A
        -- batch's members finish together (one request), so the finished batches subtract exactly.
        SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
        INTO v_in_flight
        FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'in_flight';
        IF cardinality(p_finished) > 0 THEN
            SELECT v_in_flight - CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
            INTO v_in_flight
            FROM whk.whk_03_entregas d
            WHERE d.id = ANY (p_finished) AND d.webhook_id = w.id AND d.status = 'in_flight'
              AND d.claimed_by = p_dispatcher;
        END IF;
        v_req := least(v_req, greatest(w.max_in_flight - v_in_flight, 0));
        CONTINUE WHEN v_req <= 0;

        -- Webhook token bucket (requests per second; burst defaults to one second's worth). The rate is
        -- clamped to its documented bounds (the CHECKs hold them too) while still numeric: a denormal rate
        -- does not even cast to double precision, and would underflow the bucket arithmetic if it did.
        v_num := coalesce(w.rate_limit_per_second, (v_defaults ->> 'per_second')::numeric);
        v_rate := CASE WHEN v_num IS NOT NULL THEN least(greatest(v_num, 0.001), 1000000)::double precision END;
        IF v_rate IS NOT NULL THEN
            v_burst := coalesce(w.rate_limit_burst::double precision, (v_defaults ->> 'burst')::double precision,
                                greatest(1.0, ceil(v_rate)));
            v_tokens := least(v_burst, coalesce(w.tokens, v_burst)
                                       + v_rate * greatest(extract(epoch FROM v_now - w.tokens_at), 0));
            v_req := least(v_req, floor(v_tokens)::integer);
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Consumer token bucket and daily quota, shared by all of the consumer's webhooks.
        SELECT CASE WHEN a.rate_limit_per_second IS NOT NULL
                    THEN least(greatest(a.rate_limit_per_second, 0.001), 1000000)::double precision END AS rate,
               a.rate_limit_burst::double precision AS burst,
               a.quota_deliveries_per_day AS quota, cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
        INTO c
        FROM whk.whk_04_assinantes a
        LEFT JOIN whk.consumer_runtime cr ON cr.consumer_id = a.id
        WHERE a.id = w.consumer_id;
        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            INSERT INTO whk.consumer_runtime (consumer_id) VALUES (w.consumer_id)
            ON CONFLICT (consumer_id) DO NOTHING;
            SELECT cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
            INTO c.tokens, c.tokens_at, c.quota_day, c.quota_used
            FROM whk.consumer_runtime cr WHERE cr.consumer_id = w.consumer_id
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;  -- another dispatcher is charging this consumer right now
            IF c.rate IS NOT NULL THEN
                v_ctokens := least(coalesce(c.burst, greatest(1.0, ceil(c.rate))),
                                   coalesce(c.tokens, coalesce(c.burst, greatest(1.0, ceil(c.rate))))
                                   + c.rate * greatest(extract(epoch FROM v_now - c.tokens_at), 0));
                v_req := least(v_req, floor(v_ctokens)::integer);
            END IF;
            IF c.quota IS NOT NULL THEN
                -- least() in bigint before the cast: a quota above 2^31 must not overflow integer.
                v_req := least(v_req, greatest(c.quota - CASE WHEN c.quota_day = v_now::date
                                                              THEN c.quota_used ELSE 0 END, 0))::integer;
            END IF;
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Pick the rows (mode by mode), then claim them with one statement shared by every mode.
        v_batch := NULL;
        IF w.delivery_mode = 'batch' THEN
            SELECT count(*), min(s.next_attempt_at) INTO v_due, v_oldest
            FROM (SELECT d.next_attempt_at FROM whk.whk_03_entregas d
                  WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                  ORDER BY d.next_attempt_at, d.id
                  LIMIT w.batch_size) s;
            CONTINUE WHEN v_due < w.batch_size
                      AND v_oldest > v_now - make_interval(secs => w.batch_window_ms / 1000.0);
            v_batch := gen_random_uuid();
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT w.batch_size
                FOR UPDATE SKIP LOCKED) p;
        ELSIF w.delivery_mode = 'ordered' THEN
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                JOIN (SELECT DISTINCT ON (x.ordering_key) x.id, x.status, x.next_attempt_at
                      FROM whk.whk_03_entregas x
                      WHERE x.webhook_id = w.id AND x.status IN ('pending', 'in_flight', 'awaiting_ack')
                        AND x.ordering_key IS NOT NULL
                      ORDER BY x.ordering_key, x.commit_seq, x.id) h ON h.id = d.id
                WHERE h.status = 'pending' AND h.next_attempt_at <= v_now AND d.status = 'pending'
                ORDER BY h.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE OF d SKIP LOCKED) p;
        ELSE
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE SKIP LOCKED) p;
        END IF;
        CONTINUE WHEN v_ids IS NULL;

        RETURN QUERY
        WITH claimed AS (
            UPDATE whk.whk_03_entregas d
            SET status = 'in_flight', lease_until = v_lease, claimed_by = p_dispatcher, batch_id = v_batch,
                updated_at = v_now
            WHERE d.id = ANY (v_ids)
            RETURNING d.*
        )
        SELECT k.id, k.webhook_id, k.event_id, k.event_type, k.attempts, k.schedule_offset, k.batch_id,
               k.commit_seq, k.ordering_key, whk.event_envelope(o)::text
        FROM claimed k
        JOIN whk.outbox o ON o.id = k.outbox_id AND o.created_at = k.event_created_at;
        v_requests := CASE WHEN v_batch IS NOT NULL THEN 1 ELSE cardinality(v_ids) END;
        CONTINUE WHEN v_requests = 0;
        v_left := v_left - v_requests;

        UPDATE whk.webhook_runtime r
        SET last_claim_at = v_now,
            tokens = CASE WHEN v_rate IS NULL THEN NULL ELSE v_tokens - v_requests END,
            tokens_at = v_now,
            breaker_state = CASE WHEN r.breaker_state = 'open' THEN 'half_open' ELSE r.breaker_state END,
            probe_until = CASE WHEN r.breaker_state IN ('open', 'half_open') THEN v_lease ELSE r.probe_until END
        WHERE r.webhook_id = w.id;

        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            UPDATE whk.consumer_runtime cr
            SET tokens = CASE WHEN c.rate IS NULL THEN NULL ELSE v_ctokens - v_requests END,
                tokens_at = v_now,
                quota_used = CASE WHEN cr.quota_day = v_now::date THEN cr.quota_used ELSE 0 END + v_requests,
                quota_day = v_now::date
            WHERE cr.consumer_id = w.consumer_id;
        END IF;
    END LOOP;
END;
$$;

-- Record the outcomes of finished HTTP requests in one round trip (the dispatcher flushes them in groups).
--
-- One ATTEMPT per HTTP request, however many deliveries it carried: a batch of 1,000 events is one request,
-- so it is logged once (request/response, timing, error class) and its members point at it through
-- whk_03_entregas.attempt_ids. Writing the same request/response 1,000 times was most of the cost of a batch.
--
-- p_attempts is a JSON array, one element per request (ix = its position, referenced by p_attempt_ix):
--   ix, webhook_id, success (bool), failure (bool: counts for the breaker; dispatcher/breaker.is_failure),
--   gone (bool: the endpoint answered 410), batch_id, started_at, duration_ms, request_method, request_url,
--   request_headers, request_body_sha256, request_body_size, response_status, response_headers,
--   response_body, response_truncated, error_class, error_detail, outcome.
-- The deliveries come as parallel arrays (one element per delivery; arrays bind as plain parameters and join
-- by hash, where a JSON document per delivery had to be parsed and re-scanned per row):
--   p_ids, p_attempt_ix (which request), p_attempt_no, p_state ('delivered'|'awaiting_ack'|'pending'|'dead'|
--   'parked'), p_next_at (pending), p_ack_deadline (awaiting_ack), p_dead_reason (dead).
-- The retry decision (next_attempt_at or dead) is made by the caller's pure retry policy; this function
-- applies it, writes the attempt log, moves the shared breaker and failure-streak state (once per request,
-- not per event: a failed batch is one failure), counts usage, and disables webhooks that answered 410.
-- Rows whose lease this dispatcher lost (reclaimed by another) are left alone: the other dispatcher owns
-- them now (at-least-once, never lost); their attempt is logged all the same.
CREATE OR REPLACE FUNCTION whk.record_outcomes(p_dispatcher text, p_attempts jsonb, p_ids bigint[],
                                               p_attempt_ix integer[], p_attempt_no integer[], p_state text[],
                                               p_next_at timestamptz[], p_ack_deadline timestamptz[],
                                               p_dead_reason text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, always generic, no JIT: the reasons are given once, at
-- whk.route_and_take.
SET enable_seqscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
-- Switched off around the delivery UPDATE only (see there); these clauses restore the caller's values.
SET enable_indexscan = on
SET enable_bitmapscan = on
AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_breaker jsonb := coalesce(whk.delivery_config('delivery.breaker'), '{}'::jsonb);
    v_applied integer;
    v_gone    bigint;
    -- Each delivery's row version and new state, in id order (the UPDATE after the first statement).
    v_tid     tid[];
    v_state   text[];
    v_no      integer[];
    v_next    timestamptz[];
    v_ack     timestamptz[];
    v_reason  text[];
    v_attempt bigint[];
    v_success boolean[];
    v_code    integer[];
    v_started timestamptz[];
    v_error   text[];
BEGIN
    -- One statement for the attempt log, the breaker and usage: every data-modifying CTE sees the same rows
    -- and runs exactly once. It also finds each delivery's row; the rows are updated right after it.
    WITH items AS MATERIALIZED (
        SELECT * FROM unnest(p_ids, p_attempt_ix, p_attempt_no, p_state, p_next_at, p_ack_deadline, p_dead_reason)
                 AS i(id, ix, attempt_no, state, next_attempt_at, ack_deadline, dead_reason)
    ), attempts AS MATERIALIZED (
        -- Attempt ids are drawn here so the deliveries can point at their request in the same statement.
        SELECT a.*, nextval('whk.whk_03_entregas_tentativas_id_seq') AS attempt_id,
               m.members, m.first_id, m.first_no
        FROM jsonb_to_recordset(p_attempts) AS a(
            ix integer, webhook_id bigint, success boolean, failure boolean, gone boolean, batch_id uuid,
            started_at timestamptz, duration_ms double precision, request_method text, request_url text,
            request_headers jsonb, request_body_sha256 text, request_body_size integer, response_status integer,
            response_headers jsonb, response_body text, response_truncated boolean, error_class text,
            error_detail text, outcome text)
        JOIN (SELECT i.ix, array_agg(i.id ORDER BY i.id) AS members, min(i.id) AS first_id,
                     max(i.attempt_no) AS first_no
              FROM items i GROUP BY i.ix) m ON m.ix = a.ix
    ), logged AS (
        INSERT INTO whk.whk_03_entregas_tentativas (
            id, delivery_id, delivery_ids, webhook_id, attempt_no, batch_id, dispatcher_id, started_at,
            duration_ms, request_method, request_url, request_headers, request_body_sha256, request_body_size,
            response_status, response_headers, response_body, response_truncated, error_class, error_detail,
            outcome)
        OVERRIDING SYSTEM VALUE
        SELECT a.attempt_id, a.first_id, CASE WHEN cardinality(a.members) > 1 THEN a.members END, a.webhook_id,
               a.first_no, a.batch_id, p_dispatcher, coalesce(a.started_at, v_now), a.duration_ms,
               a.request_method, a.request_url, coalesce(a.request_headers, '{}'::jsonb), a.request_body_sha256,
               a.request_body_size, a.response_status, a.response_headers, a.response_body,
               coalesce(a.response_truncated, false), a.error_class, a.error_detail, a.outcome
        FROM attempts a
        -- The attempt happened whether or not we still hold the lease: log it either way (unless the
        -- delivery itself is gone, e.g. deleted with its webhook).
        -- (Probed through p_ids: as an EXISTS on a.first_id the planner could hash-join against a scan of
        -- the whole table.)
        WHERE a.first_id IN (SELECT d.id FROM whk.whk_03_entregas d WHERE d.id = ANY (p_ids))
    ), changes AS MATERIALIZED (
        -- Each delivery with its request's outcome and its row's current version, found by a primary-key
        -- probe per delivery (a LATERAL that is not flattened: no plan can drive it from the table).
        SELECT i.id, x.tid, i.state, i.attempt_no, i.next_attempt_at, i.ack_deadline, i.dead_reason,
               a.attempt_id, a.success, a.response_status, a.started_at,
               CASE WHEN a.success THEN NULL
                    ELSE coalesce(a.error_class || ': ' || a.error_detail, a.error_class, a.outcome) END AS error
        FROM items i
        JOIN attempts a ON a.ix = i.ix
        CROSS JOIN LATERAL (SELECT y.ctid AS tid FROM whk.whk_03_entregas y WHERE y.id = i.id LIMIT 1) x
    ), agg AS (
        -- Shared breaker and failure streak, per webhook, from this group of requests.
        SELECT a.webhook_id, bool_or(a.success) AS ok, count(*) FILTER (WHERE a.failure) AS fails
        FROM attempts a
        GROUP BY a.webhook_id
    ), cfg AS (
        SELECT a.webhook_id, a.ok, a.fails,
               coalesce((w.breaker_config ->> 'failure_threshold')::integer,
                        (v_breaker ->> 'failure_threshold')::integer, 5) AS threshold,
               coalesce((w.breaker_config ->> 'open_s')::double precision,
                        (w.breaker_config ->> 'open_seconds')::double precision,
                        (v_breaker ->> 'open_s')::double precision,
                        (v_breaker ->> 'open_seconds')::double precision, 30) AS open_s,
               coalesce((w.breaker_config ->> 'open_max_s')::double precision,
                        (v_breaker ->> 'open_max_s')::double precision, 600) AS open_max_s
        FROM agg a JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
    ), breaker AS (
        UPDATE whk.webhook_runtime r
        SET breaker_state = CASE
                WHEN c.ok THEN 'closed'
                WHEN c.fails = 0 THEN r.breaker_state
                WHEN r.breaker_state = 'half_open' THEN 'open'
                WHEN r.consecutive_failures + c.fails >= c.threshold THEN 'open'
                ELSE r.breaker_state END,
            opened_at = CASE
                WHEN c.ok THEN NULL
                WHEN c.fails > 0 AND (r.breaker_state = 'half_open'
                                      OR (r.breaker_state = 'closed' AND r.consecutive_failures + c.fails >= c.threshold))
                    THEN v_now
                ELSE r.opened_at END,
            probe_at = CASE
                WHEN c.ok THEN NULL
                WHEN c.fails > 0 AND (r.breaker_state = 'half_open'
                                      OR (r.breaker_state = 'closed' AND r.consecutive_failures + c.fails >= c.threshold))
                    -- The exponent stops at 30: 2^30 x the 0.001 s floor of open_s is past the
                    -- 604800 s ceiling of open_max_s, and an uncapped one overflows double precision
                    -- after 1,023 failed probes.
                    THEN v_now + make_interval(secs => least(
                             c.open_s * power(2, CASE WHEN r.breaker_state = 'half_open'
                                                      THEN least(r.failed_probes + 1, 30) ELSE 0 END),
                             greatest(c.open_max_s, c.open_s)))
                ELSE r.probe_at END,
            failed_probes = CASE
                WHEN c.ok THEN 0
                WHEN c.fails > 0 AND r.breaker_state = 'half_open' THEN r.failed_probes + 1
                ELSE r.failed_probes END,
            probe_until = CASE WHEN c.ok OR c.fails > 0 THEN NULL ELSE r.probe_until END,
            consecutive_failures = CASE WHEN c.ok THEN 0 ELSE r.consecutive_failures + c.fails END,
            failing_since = CASE WHEN c.ok THEN NULL
                                 WHEN c.fails > 0 THEN coalesce(r.failing_since, v_now) ELSE r.failing_since END,
            last_success_at = CASE WHEN c.ok THEN v_now ELSE r.last_success_at END,
            last_failure_at = CASE WHEN c.fails > 0 THEN v_now ELSE r.last_failure_at END
        FROM cfg c
        WHERE r.webhook_id = c.webhook_id
          -- A success on a healthy, closed breaker changes nothing but last_success_at: written at most every
          -- 10 s, so a busy webhook's runtime row is not rewritten per flush (while this UPDATE holds it, the
          -- claim, which locks it SKIP LOCKED, passes the webhook by).
          AND (c.fails > 0 OR r.breaker_state <> 'closed' OR r.consecutive_failures > 0 OR r.failed_probes > 0
               OR r.failing_since IS NOT NULL OR r.last_success_at IS NULL
               OR (c.ok AND r.last_success_at < v_now - interval '10 seconds'))
    ), usage AS (
        -- Consumer usage and activity, in aggregate, counted in deliveries.
        UPDATE whk.whk_04_assinantes s
        SET usage_deliveries_total = s.usage_deliveries_total + u.total,
            usage_deliveries_failed = s.usage_deliveries_failed + coalesce(u.failed, 0),
            last_activity_at = v_now
        FROM (SELECT w.consumer_id, sum(cardinality(a.members)) AS total,
                     sum(cardinality(a.members)) FILTER (WHERE NOT coalesce(a.success, false)) AS failed
              FROM attempts a JOIN whk.whk_01_webhooks w ON w.id = a.webhook_id
              GROUP BY w.consumer_id) u
        WHERE s.id = u.consumer_id
    )
    SELECT array_agg(c.tid ORDER BY c.id), array_agg(c.state ORDER BY c.id), array_agg(c.attempt_no ORDER BY c.id),
           array_agg(c.next_attempt_at ORDER BY c.id), array_agg(c.ack_deadline ORDER BY c.id),
           array_agg(c.dead_reason ORDER BY c.id), array_agg(c.attempt_id ORDER BY c.id),
           array_agg(c.success ORDER BY c.id), array_agg(c.response_status ORDER BY c.id),
           array_agg(c.started_at ORDER BY c.id), array_agg(c.error ORDER BY c.id)
    INTO v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error
    FROM changes c;

    -- The deliveries' new states, by row version (TID scans): linear whatever the statistics say. Joined by
    -- id instead, the plan depended on statistics that are whatever the last ANALYZE saw (an empty table
    -- after a truncate, nothing in flight...), and plans that drove the join from an index scanned the
    -- outcomes once per row of the table: quadratic (measured in a batch drain: 6,000 in flight x 1,000
    -- outcomes, 0.9-3.4 s per flush). With index scans off for this statement only a TID scan per
    -- outcome is left. A row updated since it was found (a lease reclaimed by another dispatcher) has a
    -- new version and fails the TID or the ownership check: it is left alone, its attempt logged all the
    -- same.
    PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'off', true);
    UPDATE whk.whk_03_entregas d
    SET status = c.state,
        attempts = greatest(d.attempts, c.attempt_no),
        attempt_ids = d.attempt_ids || c.attempt_id,
        next_attempt_at = CASE WHEN c.state = 'pending' THEN c.next_attempt_at ELSE d.next_attempt_at END,
        lease_until = NULL,
        claimed_by = NULL,
        last_status_code = c.response_status,
        last_error = c.error,
        last_attempt_at = c.started_at,
        delivered_at = CASE WHEN c.success THEN v_now ELSE d.delivered_at END,
        acked_at = CASE WHEN c.state = 'delivered' THEN v_now ELSE d.acked_at END,
        ack_deadline = CASE WHEN c.state = 'awaiting_ack' THEN c.ack_deadline END,
        dead_at = CASE WHEN c.state = 'dead' THEN v_now END,
        dead_reason = CASE WHEN c.state = 'dead' THEN c.dead_reason END,
        updated_at = v_now
    FROM unnest(v_tid, v_state, v_no, v_next, v_ack, v_reason, v_attempt, v_success, v_code, v_started, v_error)
         AS c(tid, state, attempt_no, next_attempt_at, ack_deadline, dead_reason, attempt_id, success,
              response_status, started_at, error)
    WHERE d.ctid = c.tid AND d.status = 'in_flight' AND d.claimed_by = p_dispatcher;
    GET DIAGNOSTICS v_applied = ROW_COUNT;
    PERFORM set_config('enable_indexscan', 'on', true), set_config('enable_bitmapscan', 'on', true);

    FOR v_gone IN
        SELECT DISTINCT (e ->> 'webhook_id')::bigint
        FROM jsonb_array_elements(p_attempts) e
        WHERE (e ->> 'gone')::boolean
    LOOP
        PERFORM whk.disable_webhook(v_gone, 'endpoint answered 410 Gone', 'whk-dispatcher');
    END LOOP;

    RETURN v_applied;
END;
$$;

-- whk.api_rate_limit_hit: count one API request of p_subject against a GCRA limit of p_limit requests per
-- p_window_s seconds (bursts up to p_limit). One row lock per subject serialises that subject's requests
-- across every API process; other subjects never wait. p_limit NULL = the global default
-- (whk_05_configuracoes 'rate_limit.api_per_minute', scaled to the window). p_now is injectable for tests.
CREATE OR REPLACE FUNCTION whk.api_rate_limit_hit(
    p_subject text,
    p_limit integer,
    p_window_s double precision DEFAULT 60,
    p_now timestamptz DEFAULT clock_timestamp()
)
RETURNS TABLE (allowed boolean, limit_count integer, remaining integer, retry_after_s double precision,
               reset_s double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_limit    integer := p_limit;
    v_interval double precision;          -- seconds between requests at the sustained rate
    v_tolerance double precision;         -- how far ahead of now the TAT may run (the burst)
    v_tat      timestamptz;
    v_ahead    double precision;
BEGIN
    IF v_limit IS NULL THEN
        SELECT least(ceil((c.value #>> '{}')::numeric * p_window_s / 60), 2147483647)::integer INTO v_limit
        FROM whk.whk_05_configuracoes c WHERE c.key = 'rate_limit.api_per_minute';
        v_limit := coalesce(v_limit, 600);
    END IF;
    -- At least one request per window: the interval below divides by the limit.
    v_limit := greatest(v_limit, 1);
    v_interval := p_window_s / v_limit;
    v_tolerance := p_window_s - v_interval;

    INSERT INTO whk.api_rate_limits AS r (subject, tat) VALUES (p_subject, p_now)
    ON CONFLICT (subject) DO NOTHING;
    SELECT r.tat INTO v_tat FROM whk.api_rate_limits r WHERE r.subject = p_subject FOR UPDATE;
    v_tat := greatest(v_tat, p_now);
    v_ahead := extract(epoch FROM v_tat - p_now);

    IF v_ahead > v_tolerance + 1e-6 THEN
        allowed := false;
        limit_count := v_limit;
        remaining := 0;
        retry_after_s := v_ahead - v_tolerance;
        reset_s := v_ahead;
        RETURN NEXT;
        RETURN;
    END IF;

    v_tat := v_tat + make_interval(secs => v_interval);
    UPDATE whk.api_rate_limits r SET tat = v_tat WHERE r.subject = p_subject;
    v_ahead := v_ahead + v_interval;
    allowed := true;
    limit_count := v_limit;
    remaining := greatest(0, floor((p_window_s - v_ahead) / v_interval + 1e-6)::integer);
    retry_after_s := 0;
    reset_s := v_ahead;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION whk.api_rate_limit_hit(text, integer, double precision, timestamptz) IS
    'GCRA rate limit shared across API processes: allowed?, limit, remaining, retry-after and reset seconds.';

-- When could whk.claim_deliveries next find work that is waiting on time rather than on a new event?
-- The earliest of: a pending delivery's next_attempt_at (retries, delayed mode), a batch window closing,
-- a breaker's probe time, a token bucket refilling to one token. NULL = nothing is waiting on time.
-- The dispatcher sleeps until then (or a wake-up, or its poll interval, whichever comes first).
-- PL/pgSQL, not SQL: a SQL function with a SET clause is never inlined and was parsed and planned at every
-- call (measured: ~0.45 ms of planning per call, the dispatcher asks up to ten times a second); PL/pgSQL
-- keeps the plan for the session.
CREATE OR REPLACE FUNCTION whk.next_wakeup()
RETURNS timestamptz
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk
-- The kept plan stays on its indexes, no JIT: the reason is given once, at whk.route_and_take.
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    RETURN (SELECT min(greatest(
               CASE WHEN w.delivery_mode = 'batch'
                    THEN n.due + make_interval(secs => w.batch_window_ms / 1000.0) ELSE n.due END,
               CASE WHEN r.breaker_state = 'open' THEN r.probe_at END,
               -- The rate clamped to its bounds, as in the claim: a denormal one overflows the division.
               CASE WHEN coalesce(w.rate_limit_per_second, 0) > 0 AND r.tokens IS NOT NULL AND r.tokens < 1
                    THEN r.tokens_at + make_interval(secs => (1 - r.tokens)
                                                             / least(greatest(w.rate_limit_per_second, 0.001),
                                                                     1000000)::double precision)
               END))
    FROM whk.whk_01_webhooks w
    JOIN whk.webhook_runtime r ON r.webhook_id = w.id
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at AS due FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'pending'
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) n
    WHERE w.status = 'active' AND w.deleted_at IS NULL);
END;
$$;

COMMIT;
