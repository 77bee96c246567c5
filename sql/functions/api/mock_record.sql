-- whk.mock_record: store one request received by a development mock endpoint and keep only the newest
-- 1,000 per mock name, so a forgotten mock pointed at by a busy webhook cannot grow without bound.
CREATE OR REPLACE FUNCTION whk.mock_record(
    p_name text, p_method text, p_headers jsonb, p_body text, p_body_size integer, p_status integer
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO whk.mock_requests (mock_name, method, headers, body, body_size, replied_status)
    VALUES (p_name, p_method, p_headers, p_body, p_body_size, p_status)
    RETURNING id INTO v_id;

    DELETE FROM whk.mock_requests m
    WHERE m.mock_name = p_name
      AND m.id < (SELECT k.id FROM whk.mock_requests k
                  WHERE k.mock_name = p_name ORDER BY k.id DESC OFFSET 999 LIMIT 1);
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION whk.mock_record(text, text, jsonb, text, integer, integer) IS
    'Record a request to a development mock endpoint; keeps the newest 1,000 per mock name.';
