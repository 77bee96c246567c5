-- API keys: shown once at creation, stored as SHA-256 of the whole key (the key carries 256 random bits,
-- so a fast hash is enough; no plaintext ever reaches the database). ``prefix`` is the non-secret part
-- used to find the row (whk_<prefix>_<secret>); the hash is then compared in constant time by the API.
CREATE TABLE whk.api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL CHECK (prefix ~ '^[a-z0-9]{12}$'),
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    -- NULL consumer = admin key (is_admin must then be true): admins see every tenant.
    consumer_id  bigint      REFERENCES whk.whk_04_assinantes (id) ON DELETE CASCADE,
    is_admin     boolean     NOT NULL DEFAULT false,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes       text[]      NOT NULL DEFAULT '{*}' CHECK (cardinality(scopes) > 0),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    revoked_by   text,
    -- Refreshed at most once a minute per key (not on every request).
    last_used_at timestamptz,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    CONSTRAINT api_keys_owner_check CHECK ((consumer_id IS NULL) = is_admin)
);
COMMENT ON TABLE whk.api_keys IS
    'API keys (hashed). Revocation is read on every request: effective for the next request after commit.';
CREATE INDEX api_keys_consumer_idx ON whk.api_keys (consumer_id, id);
