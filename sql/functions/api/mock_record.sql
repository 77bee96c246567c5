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
