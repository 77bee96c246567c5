-- The SQL control plane (docs/dba.md): register a webhook with the API's validation (api/webhooks/schemas.py
-- WebhookCreate and the controller's checks); bad input raises invalid_parameter_value naming the
-- parameter, with a HINT, never a bare constraint error. Named notation reads best:
--   SELECT whk.create_webhook(consumer_id => 1, name => 'orders', url => 'https://erp.example/hooks',
--                             event_types => '{order.*}');
-- Returns the new id. Never unsigned: the signing secret is encrypted with the application's key, which the
-- database does not have, so the webhook starts waiting for it (needs_secret_since); the job worker
-- provisions one within seconds, and its deliveries wait meanwhile (`whk webhooks secret ID` shows it to
-- hand to the receiver). For the same reason outbound credentials (auth_type other than none) are set
-- through the API. Which URLs the SSRF policy allows is the dispatcher's to decide (WHK_ALLOW_PRIVATE_CIDRS):
-- a refused URL quarantines the webhook (stage ssrf) at its first attempt.
-- Audited like any SQL change (whk.audit_sql_change, actor = the database role).
CREATE OR REPLACE FUNCTION whk.create_webhook(
    consumer_id           bigint,
    name                  text,
    url                   text,
    event_types           text[],
    description           text    DEFAULT NULL,
    http_method           text    DEFAULT 'POST',
    filter                text    DEFAULT NULL,
    payload_version       integer DEFAULT NULL,
    headers               jsonb   DEFAULT '{}',
    status                text    DEFAULT 'active',
    delivery_mode         text    DEFAULT 'immediate',
    batch_size            integer DEFAULT 100,
    batch_window_ms       integer DEFAULT 1000,
    delay_seconds         integer DEFAULT 0,
    ordering_key_path     text    DEFAULT NULL,
    retry_policy          jsonb   DEFAULT NULL,
    timeout_ms            integer DEFAULT 15000,
    rate_limit_per_second numeric DEFAULT NULL,
    rate_limit_burst      integer DEFAULT NULL,
    max_in_flight         integer DEFAULT 10,
    require_ack           boolean DEFAULT false,
    ack_timeout_seconds   integer DEFAULT 3600,
    breaker_config        jsonb   DEFAULT NULL,
    metadata              jsonb   DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_pattern CONSTANT text := '^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$';
    v_reserved CONSTANT text[] := ARRAY['host', 'content-length', 'content-type', 'transfer-encoding', 'connection',
                                        'user-agent', 'webhook-id', 'webhook-timestamp', 'webhook-signature'];
    v_problem text;
    v_id      bigint;
    v_path    jsonpath;
BEGIN
    v_problem := CASE
        WHEN create_webhook.consumer_id IS NULL
             OR NOT EXISTS (SELECT 1 FROM whk.whk_04_assinantes a WHERE a.id = create_webhook.consumer_id)
            THEN format('consumer_id %s is not a consumer (SELECT id, name FROM whk.whk_04_assinantes)',
                        coalesce(create_webhook.consumer_id::text, 'NULL'))
        WHEN create_webhook.name IS NULL OR length(create_webhook.name) NOT BETWEEN 1 AND 200
            THEN 'name must have 1 to 200 characters'
        WHEN create_webhook.url IS NULL OR create_webhook.url !~ '^(https?|rediss?|amqps?)://' OR length(create_webhook.url) NOT BETWEEN 8 AND 2048
            THEN 'url must be an http(s)://, redis(s):// or amqp(s):// URL of at most 2048 characters'
        WHEN create_webhook.url ~ '^(rediss?|amqps?)://[^/?#]*@'
            THEN 'a broker URL carries no login: pass it as auth_type basic with the credential user:password (stored encrypted)'
        WHEN cardinality(create_webhook.event_types) IS NULL OR cardinality(create_webhook.event_types) NOT BETWEEN 1 AND 100
            THEN 'event_types must list 1 to 100 types or patterns, e.g. ''{order.created,invoice.*}'''
        WHEN EXISTS (SELECT 1 FROM unnest(create_webhook.event_types) t
                     WHERE t IS NULL OR length(t) > 200 OR t !~ v_pattern)
            THEN format('event_types: %s is neither a type (order.created), a prefix (order.*) nor *',
                        (SELECT coalesce(quote_literal(t), 'NULL') FROM unnest(create_webhook.event_types) t
                         WHERE t IS NULL OR length(t) > 200 OR t !~ v_pattern LIMIT 1))
        WHEN length(create_webhook.description) > 2000 THEN 'description must have at most 2000 characters'
        WHEN create_webhook.http_method IS NULL OR create_webhook.http_method NOT IN ('POST', 'PUT', 'PATCH')
            THEN 'http_method must be POST, PUT or PATCH'
        WHEN length(create_webhook.filter) NOT BETWEEN 1 AND 2000 THEN 'filter must have 1 to 2000 characters'
        WHEN length(create_webhook.ordering_key_path) NOT BETWEEN 1 AND 2000
            THEN 'ordering_key_path must have 1 to 2000 characters'
        WHEN create_webhook.payload_version NOT BETWEEN 1 AND 1000
            THEN 'payload_version must be NULL (any) or between 1 and 1000'
        WHEN create_webhook.headers IS NULL OR jsonb_typeof(create_webhook.headers) <> 'object'
            THEN 'headers must be a JSON object of name: value strings'
        WHEN (SELECT count(*) FROM jsonb_object_keys(create_webhook.headers)) > 50 THEN 'headers: at most 50'
        WHEN EXISTS (SELECT 1 FROM jsonb_each(create_webhook.headers) h
                     WHERE h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,100}$' OR lower(h.key) = ANY (v_reserved)
                        OR jsonb_typeof(h.value) <> 'string' OR length(h.value #>> '{}') > 2000
                        OR (h.value #>> '{}') ~ '[\r\n]')
            THEN 'headers: names are HTTP tokens (not one WHK sets itself: webhook-*, content-type, host, ...), '
                 'values strings of at most 2000 characters without CR or LF'
        WHEN create_webhook.status IS NULL OR create_webhook.status NOT IN ('active', 'paused')
            THEN 'status must be active or paused'
        WHEN create_webhook.delivery_mode IS NULL
             OR create_webhook.delivery_mode NOT IN ('immediate', 'batch', 'delayed', 'ordered')
            THEN 'delivery_mode must be immediate, batch, delayed or ordered'
        WHEN create_webhook.batch_size IS NULL OR create_webhook.batch_size NOT BETWEEN 1 AND 1000
            THEN 'batch_size must be between 1 and 1000'
        WHEN create_webhook.batch_window_ms IS NULL OR create_webhook.batch_window_ms NOT BETWEEN 0 AND 3600000
            THEN 'batch_window_ms must be between 0 and 3600000'
        WHEN create_webhook.delay_seconds IS NULL OR create_webhook.delay_seconds NOT BETWEEN 0 AND 2592000
            THEN 'delay_seconds must be between 0 and 2592000 (30 days)'
        WHEN create_webhook.timeout_ms IS NULL OR create_webhook.timeout_ms NOT BETWEEN 100 AND 120000
            THEN 'timeout_ms must be between 100 and 120000'
        WHEN create_webhook.rate_limit_per_second NOT BETWEEN 0.001 AND 1000000
            THEN 'rate_limit_per_second must be NULL (no limit) or between 0.001 and 1000000'
        WHEN create_webhook.rate_limit_burst NOT BETWEEN 1 AND 1000000
            THEN 'rate_limit_burst must be NULL or between 1 and 1000000'
        WHEN create_webhook.max_in_flight IS NULL OR create_webhook.max_in_flight NOT BETWEEN 1 AND 1000
            THEN 'max_in_flight must be between 1 and 1000'
        WHEN create_webhook.require_ack IS NULL THEN 'require_ack must be true or false'
        WHEN create_webhook.ack_timeout_seconds IS NULL OR create_webhook.ack_timeout_seconds NOT BETWEEN 1 AND 2592000
            THEN 'ack_timeout_seconds must be between 1 and 2592000'
        WHEN whk.retry_policy_problem(create_webhook.retry_policy) IS NOT NULL
            THEN 'retry_policy: ' || whk.retry_policy_problem(create_webhook.retry_policy)
        WHEN whk.breaker_config_problem(create_webhook.breaker_config) IS NOT NULL
            THEN 'breaker_config: ' || whk.breaker_config_problem(create_webhook.breaker_config)
        WHEN create_webhook.metadata IS NULL OR jsonb_typeof(create_webhook.metadata) <> 'object'
            THEN 'metadata must be a JSON object'
    END;
    IF v_problem IS NULL THEN
        BEGIN
            v_path := create_webhook.filter::jsonpath;
            v_path := create_webhook.ordering_key_path::jsonpath;
        EXCEPTION WHEN syntax_error OR invalid_text_representation OR invalid_parameter_value THEN
            v_problem := format('%s is not a SQL/JSON path: %s',
                                CASE WHEN v_path IS NULL AND create_webhook.filter IS NOT NULL
                                     THEN 'filter' ELSE 'ordering_key_path' END, SQLERRM);
        END;
    END IF;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'whk.create_webhook: %', v_problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The parameters and their bounds: docs/dba.md, "SQL control plane" (the same as '
                         'POST /api/whk/webhooks).';
    END IF;
    INSERT INTO whk.whk_01_webhooks AS w (consumer_id, name, description, url, http_method, event_types, filter,
                                         payload_version, headers, status, delivery_mode, batch_size,
                                         batch_window_ms, delay_seconds, ordering_key_path, retry_policy,
                                         timeout_ms, rate_limit_per_second, rate_limit_burst, max_in_flight,
                                         require_ack, ack_timeout_seconds, breaker_config, metadata)
    VALUES (create_webhook.consumer_id, create_webhook.name, create_webhook.description, create_webhook.url,
            create_webhook.http_method, create_webhook.event_types, create_webhook.filter::jsonpath,
            create_webhook.payload_version, create_webhook.headers, create_webhook.status,
            create_webhook.delivery_mode, create_webhook.batch_size, create_webhook.batch_window_ms,
            create_webhook.delay_seconds, create_webhook.ordering_key_path::jsonpath, create_webhook.retry_policy,
            create_webhook.timeout_ms, create_webhook.rate_limit_per_second, create_webhook.rate_limit_burst,
            create_webhook.max_in_flight, create_webhook.require_ack, create_webhook.ack_timeout_seconds,
            create_webhook.breaker_config, create_webhook.metadata)
    RETURNING w.id INTO v_id;
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.create_webhook(bigint, text, text, text[], text, text, text, integer, jsonb, text, text, integer,
                                       integer, integer, text, jsonb, integer, numeric, integer, integer, boolean,
                                       integer, jsonb, jsonb) IS
    'SQL control plane: register a webhook with the API''s validation (bad input raises with a HINT); returns its '
    'id. Its signing secret is provisioned by the job worker (never sent unsigned meanwhile).';
