-- Dispatcher processes: heartbeat (health, lease recovery) and the idle flag that gates wake-ups.
CREATE TABLE whk.dispatchers (
    id           text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- Capture triggers NOTIFY only while some dispatcher is idle (see docs/capture.md).
    idle         boolean     NOT NULL DEFAULT false,
    stopping     boolean     NOT NULL DEFAULT false,
    -- What the dispatcher enforces and whether its rounds are failing (whk.dispatcher_heartbeat): health
    -- shows dispatchers whose SSRF policy differs from their peers', and errors no quarantine explains.
    ssrf_policy   text,
    ssrf_exempt   text[],
    last_error    text,
    last_error_at timestamptz
);
COMMENT ON TABLE whk.dispatchers IS 'Live dispatcher processes; rows older than the lease are considered dead.';
CREATE INDEX dispatchers_idle_idx ON whk.dispatchers (id) WHERE idle;
