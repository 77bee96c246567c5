"""`whk db retention --dry-run` lists what would go (outbox, attempt-log and delivery-history partitions, the
audit trail's batched deletes) with sizes and removes nothing; without it, it runs."""

from __future__ import annotations

import psycopg
import pytest

from tests.db.test_attempt_history import old_day
from tests.db.test_retention import delivery, expired_history, history_days, ids, webhook
from tests.integration.test_cli import run

pytestmark = pytest.mark.db


@pytest.mark.slow  # `whk` subprocesses
def test_db_retention_dry_run_then_run(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.outbox_days'")
        lo = conn.execute("SELECT date_trunc('day', now() - interval '40 days')").fetchone()
        assert lo is not None
        conn.execute(
            f"CREATE TABLE whk.outbox_old40 PARTITION OF whk.outbox FOR VALUES FROM ('{lo[0].isoformat()}')"
            f" TO ('{lo[0].isoformat()}'::timestamptz + interval '1 day')"
        )
        conn.execute(
            "INSERT INTO whk.outbox (event_type, data, operation, created_at, status)"
            " VALUES ('system.startup', '{}', 'EMIT', now() - interval '40 days', 'routed')"
        )
        # A day of the attempt log past retention.attempts_days, holding a delivered delivery's attempt.
        conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.attempts_days'")
        attempts_day = old_day(conn, 40)
        # Days of finished deliveries past retention.delivered_days; a dead letter as old, which stays.
        conn.execute(
            "UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.delivered_days'"
        )
        history_days(conn, 40)
        hook = webhook(conn)
        finished = {delivery(conn, hook, "delivered", d) for d in (40, 40, 35)}
        # (Its attempt is in the attempt log's default partition: attempts_day holds no dead letter's.)
        dead = delivery(conn, hook, "dead", 41)
        history = expired_history(conn, 30)
        assert len(history) == 10
    env = {"WHK_DATABASE_URL": db_url}
    dry = run("db", "retention", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    line = next(ln for ln in dry.stdout.splitlines() if "whk.outbox_old40" in ln)
    assert "drop partition" in line
    assert "kB" in line
    line = next(ln for ln in dry.stdout.splitlines() if attempts_day in ln)
    assert line.startswith("attempts") and "drop partition" in line and "kB" in line
    for day in history:
        line = next(ln for ln in dry.stdout.splitlines() if day in ln)
        assert line.startswith("delivered") and "drop partition" in line and "kB" in line
    assert "whk.audit_log" in dry.stdout
    assert "nothing removed" in dry.stdout
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('whk.outbox_old40')").fetchone() == ("whk.outbox_old40",)
        assert conn.execute("SELECT to_regclass(%s)", (attempts_day,)).fetchone() == (attempts_day,)
        assert all(conn.execute("SELECT to_regclass(%s)", (d,)).fetchone() == (d,) for d in history)
        assert ids(conn, "whk_03_entregas") == finished | {dead}
    done = run("db", "retention", env=env)
    assert done.returncode == 0, done.stderr
    assert "dropped  whk.outbox_old40" in done.stdout
    assert f"dropped  {attempts_day}" in done.stdout
    assert all(f"dropped  {d}" in done.stdout for d in history)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('whk.outbox_old40')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass(%s)", (attempts_day,)).fetchone() == (None,)
        assert all(conn.execute("SELECT to_regclass(%s)", (d,)).fetchone() == (None,) for d in history)
        assert ids(conn, "whk_03_entregas") == {dead}
