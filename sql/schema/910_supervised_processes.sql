-- The child processes a `whk up` supervises (API, dispatcher, ...), written by that `whk up` and read by
-- /api/whk/monitoring/health: a child that keeps crashing is reported there while PostgreSQL and the
-- other children stay up. The supervisor refreshes updated_at while it runs and deletes its rows when it
-- stops; rows it left behind (killed with -9) are ignored once stale.
CREATE TABLE whk.supervised_processes (
    supervisor  text        NOT NULL CHECK (length(supervisor) BETWEEN 1 AND 200),
    name        text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    pid         integer,
    -- running: up; restarting: waiting out its backoff after a crash; failing: crashed max_crashes times
    -- within the window, retried at the longest backoff.
    state       text        NOT NULL CHECK (state IN ('running', 'restarting', 'failing')),
    restarts    integer     NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    crashes_in_window integer NOT NULL DEFAULT 0 CHECK (crashes_in_window >= 0),
    last_exit   text        CHECK (length(last_exit) <= 200),
    last_exit_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supervisor, name)
);
COMMENT ON TABLE whk.supervised_processes IS
    'Children of each running `whk up` (state, restarts, last exit cause); read by the health endpoint.';
