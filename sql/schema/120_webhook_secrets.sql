-- Signing secrets of a webhook: the current one (expires_at NULL) plus old ones inside their grace period.
CREATE TABLE whk.webhook_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  bigint      NOT NULL REFERENCES whk.whk_01_webhooks (id) ON DELETE CASCADE,
    key_id      text        NOT NULL CHECK (key_id ~ '^key_[A-Za-z0-9]{8,64}$'),
    -- AES-GCM ciphertext (key id inside), associated data = this row's id: never the plaintext.
    secret_enc  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    CONSTRAINT webhook_secrets_key_id_key UNIQUE (key_id)
);
COMMENT ON TABLE whk.webhook_secrets IS
    'Webhook signing secrets (whsec_). Deliveries sign with every row whose expires_at is NULL or in the future.';
CREATE INDEX webhook_secrets_webhook_idx ON whk.webhook_secrets (webhook_id, created_at DESC);
