-- 0008 dev_mock: development mock endpoints (spec: Mock endpoints para desenvolvimento) store what they receive.
BEGIN;
SELECT whk.migration_begin(8, 'dev_mock');

-- Requests received by the development mock endpoints (POST /api/whk/dev/mock/{name}): a place to point a
-- webhook at while building an integration, and to see exactly what WHK sent (headers, body, signature).
CREATE TABLE whk.mock_requests (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mock_name      text        NOT NULL CHECK (mock_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    received_at    timestamptz NOT NULL DEFAULT now(),
    method         text        NOT NULL,
    headers        jsonb       NOT NULL CHECK (jsonb_typeof(headers) = 'object'),
    -- At most 256 KB of the body are kept (body_size is the full size).
    body           text        NOT NULL,
    body_size      integer     NOT NULL CHECK (body_size >= 0),
    replied_status integer     NOT NULL CHECK (replied_status BETWEEN 100 AND 599)
);
COMMENT ON TABLE whk.mock_requests IS
    'Development mock endpoints: the last 1,000 requests per mock name (whk.mock_record trims older ones).';
CREATE INDEX mock_requests_name_idx ON whk.mock_requests (mock_name, id DESC);

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

COMMIT;
