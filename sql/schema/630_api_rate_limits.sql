-- API rate-limit state shared by every API process: one GCRA "theoretical arrival time" per subject
-- (consumer:<id>, or the admin credential). UNLOGGED: after a crash the limits simply start afresh.
CREATE UNLOGGED TABLE whk.api_rate_limits (
    subject text        PRIMARY KEY,
    tat     timestamptz NOT NULL
);
COMMENT ON TABLE whk.api_rate_limits IS 'GCRA state of the per-consumer API rate limit (see api_rate_limit_hit).';
