-- Requests received by the development mock endpoints (/api/whk/dev/mock/{name}, any method): a place to point
-- a webhook at while building an integration, and to see exactly what WHK sent (headers, body, signature).
CREATE TABLE whk.mock_requests (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mock_name      text        NOT NULL CHECK (mock_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    received_at    timestamptz NOT NULL DEFAULT now(),
    method         text        NOT NULL,
    headers        jsonb       NOT NULL CHECK (jsonb_typeof(headers) = 'object'),
    -- At most 256 KB of the body are kept (body_size is the full size).
    body           text        NOT NULL,
    body_size      integer     NOT NULL CHECK (body_size >= 0),
    replied_status integer     NOT NULL CHECK (replied_status BETWEEN 100 AND 599),
    -- The signature verdict against the secrets of the webhook(s) whose URL targets this mock: true = one
    -- verified (webhook_id says which), false = none did (signature_reason says why), NULL = no webhook
    -- targets the mock, so there was nothing to verify with. No foreign key: a deleted webhook must not
    -- take the record of what it sent with it.
    webhook_id       bigint,
    signature_ok     boolean,
    signature_reason text CHECK (length(signature_reason) <= 1000)
);
COMMENT ON TABLE whk.mock_requests IS
    'Development mock endpoints: recent requests per mock name, bounded by the dev.mock_* settings (whk.mock_record trims).';
CREATE INDEX mock_requests_name_idx ON whk.mock_requests (mock_name, id DESC);
-- The retention trim deletes by age.
CREATE INDEX mock_requests_received_at_idx ON whk.mock_requests (received_at);
