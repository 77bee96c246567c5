"""The job worker registers the `retention` schedule, and its body (whk.retention.arun) works with the
worker's least-privilege role."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.db.test_retention import delivery, expired_history, history_days, ids, webhook
from tests.support.ops import ops_settings, worker
from tests.support.receiver import wait_until
from whk import retention

pytestmark = pytest.mark.db


async def test_the_worker_schedules_retention(conn: psycopg.Connection[Any], db_url: str) -> None:
    def scheduled() -> bool:
        rows = conn.execute("SELECT entrypoint, expression FROM whk.pgqueuer_schedules").fetchall()
        return ("retention", "30 * * * *") in rows

    async with worker(ops_settings(db_url)):
        assert await wait_until(scheduled, 30)


async def test_arun_as_the_worker_role(
    conn: psycopg.Connection[Any], aconn: psycopg.AsyncConnection[Any]
) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key LIKE 'retention.%'")
    lo = conn.execute("SELECT date_trunc('day', now() - interval '40 days')").fetchone()
    assert lo is not None
    conn.execute(
        f"CREATE TABLE whk.outbox_old40 PARTITION OF whk.outbox FOR VALUES FROM ('{lo[0].isoformat()}')"
        f" TO ('{lo[0].isoformat()}'::timestamptz + interval '1 day')"
    )
    conn.execute(
        "INSERT INTO whk.audit_log (occurred_at, actor, action, target_type)"
        " SELECT now() - interval '400 days', 't', 'x.y', 'thing' FROM generate_series(1, 3)"
    )
    # Two expired days of finished deliveries, and a dead letter that stays whatever its age.
    history_days(conn, 32)
    hook = webhook(conn)
    old = {delivery(conn, hook, "delivered", d) for d in (32, 31)}
    dead = delivery(conn, hook, "dead", 40)
    expired = expired_history(conn, 30)
    assert len(expired) == 2
    await aconn.execute("SET ROLE whk_dispatcher")
    report = await retention.arun(aconn, batch=2)
    await aconn.execute("RESET ROLE")
    assert report.dropped == ["whk.outbox_old40", *expired]
    assert report.freed_bytes > 0
    assert report.deleted == {"audit": 3}
    assert ids(conn, "whk_03_entregas") == {dead}
    assert not old & ids(conn, "whk_03_entregas")
    # Only the old rows went: the settings UPDATE above is audited too (SQL-side changes are), and stays.
    assert conn.execute("SELECT count(*) FROM whk.audit_log WHERE action = 'x.y'").fetchone() == (0,)
    settings_rows = "SELECT count(*) FROM whk.audit_log WHERE actor LIKE 'sql:%' AND target_type = 'setting'"
    assert conn.execute(settings_rows).fetchone() == (4,)


async def test_a_replay_job_that_fails_marks_the_replay_failed(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    from tests.support.delivery import emit, make_consumer, make_webhook, route

    hook = make_webhook(conn, make_consumer(conn), "http://127.0.0.1:9/none", ["order.*"])
    emit(conn, "order.created", count=2)
    route(conn)
    conn.execute("DELETE FROM whk.delivery_queue")
    row = conn.execute(
        "SELECT whk.replay_start(%s, now() - interval '1 hour', now(), '{}', NULL, 't')", (hook,)
    ).fetchone()
    assert row is not None
    # A fault inside the batch: every new delivery row (the replay writes them into the queue) is refused.
    conn.execute(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'injected fault'; END$$"
    )
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON whk.delivery_queue"
        " FOR EACH ROW EXECUTE FUNCTION public.refuse()"
    )

    def failed() -> bool:
        r = conn.execute("SELECT state FROM whk.replays WHERE id = %s", row).fetchone()
        return r == ("failed",)

    async with worker(ops_settings(db_url)):
        assert await wait_until(failed, 30)
    error = conn.execute("SELECT error FROM whk.replays WHERE id = %s", row).fetchone()
    assert error is not None
    assert "injected fault" in error[0]
