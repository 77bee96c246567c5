-- Global settings (configuracoes): retry policy, default limits, security, templates, monitoring.
-- Stored as one JSON value per key so DBAs can read and change them with plain SQL.
CREATE TABLE whk.whk_05_configuracoes (
    key         text        PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    category    text        NOT NULL CHECK (category IN ('retry', 'rate_limit', 'security', 'template',
                                                         'monitoring', 'delivery', 'dev', 'retention')),
    value       jsonb       NOT NULL,
    description text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL DEFAULT current_user
);
COMMENT ON TABLE whk.whk_05_configuracoes IS 'Global WHK settings as key -> JSON value; defaults seeded by migration 0003.';
