-- Queries of `whk up`'s supervisor (caller: whk/supervisor.py StatusTable).

-- name: upsert_child :exec
INSERT INTO whk.supervised_processes AS p
    (supervisor, name, pid, state, restarts, crashes_in_window, last_exit, last_exit_at, updated_at)
VALUES (%(supervisor)s, %(name)s, %(pid)s, %(state)s, %(restarts)s, %(crashes_in_window)s,
        left(%(last_exit)s, 200), %(last_exit_at)s, now())
ON CONFLICT (supervisor, name) DO UPDATE
SET pid = EXCLUDED.pid, state = EXCLUDED.state, restarts = EXCLUDED.restarts,
    crashes_in_window = EXCLUDED.crashes_in_window, last_exit = EXCLUDED.last_exit,
    last_exit_at = EXCLUDED.last_exit_at, updated_at = now();

-- name: forget_supervisor :exec
DELETE FROM whk.supervised_processes WHERE supervisor = %(supervisor)s;
