"""`whk jobs` and `whk alerts` against a real database."""

from __future__ import annotations

import pytest

from tests.integration.test_cli import run
from tests.support.ops import rule

pytestmark = [pytest.mark.db]


def test_whk_jobs_lists_queued_running_failed_and_the_schedules(db_url, conn):
    conn.execute(
        "INSERT INTO whk.pgqueuer (priority, entrypoint, payload, status, attempts) VALUES "
        "(0, 'notify', NULL, 'queued', 0), (0, 'notify', NULL, 'picked', 1), "
        "(0, 'notify', NULL, 'failed', 4), (0, 'notify', NULL, 'successful', 0)"
    )
    conn.execute(
        "INSERT INTO whk.ops_job_runs (job, period_s, worker, finished_at, ok, detail) "
        "VALUES ('evaluate_alerts', 15, 'w1', now(), true, '{\"rules\": 5}')"
    )
    proc = run("jobs", env={"WHK_DATABASE_URL": db_url})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for label in ("queued", "running", "failed"):
        assert f"notify               {label:<8} 1" in out, out
    assert "successful" not in out
    assert "last run evaluate_alerts" in out and "ok" in out


def test_whk_alerts_lists_rules_and_their_states(db_url, conn):
    alert = rule(conn, {"metric": "failure_rate", "operator": ">", "threshold": 0.5}, name="orders failing")
    conn.execute(
        "UPDATE whk.whk_06_alertas SET state = 'firing', last_value = 0.75, trigger_count = 2, "
        "silenced_until = now() + interval '1 hour' WHERE id = %s",
        [alert],
    )
    proc = run("alerts", env={"WHK_DATABASE_URL": db_url})
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if "orders failing" in ln]
    assert line.split()[:2] == [str(alert), "firing"]
    assert "failure_rate" in line and "0.75" in line and "[silenced]" in line
    assert "No live dispatcher" in proc.stdout  # the built-in rules are listed too
