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
