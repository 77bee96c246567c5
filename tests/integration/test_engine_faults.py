"""The engine in-process under faults that are not one round's: outcomes one webhook's row cannot record,
and an error no webhook explains (a function missing after a bad deploy). Real PostgreSQL, real
receivers on 127.0.0.1; faults made in SQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import REPO, compress_schedule, fast_settings, running
from tests.support.faults import drop_checks, poison_record
from tests.support.receiver import Reply, receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]


def quarantine(conn: psycopg.Connection[Any], hook: int) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT quarantine_stage, quarantine_sqlstate FROM whk.whk_01_webhooks WHERE id = %s", [hook]
    ).fetchone()


async def test_outcomes_one_webhook_cannot_record_quarantine_it_and_the_rest_are_recorded(
    db_url, conn, receiver
):
    compress_schedule(conn, [0.2, 0.2, 0.2])
    c = make_consumer(conn)
    good = make_webhook(conn, c, receiver.url("/good"), ["r.*"])
    bad = make_webhook(conn, c, receiver.url("/bad"), ["r.*"])
    receiver.on("/bad", default=Reply(status=500))  # a failure: recording it reads the breaker override
    poison_record(conn, bad)
    emit(conn, "r.e", count=5)
    async with running(fast_settings(db_url)) as task:
        assert await wait_until(lambda: quarantine(conn, bad) == ("record", "22P02"), 15)
        assert await wait_until(lambda: statuses(conn, good) == {"delivered": 5}, 15)
        emit(conn, "r.e", count=5)  # the loop goes on for everyone else
        assert await wait_until(lambda: statuses(conn, good) == {"delivered": 10}, 15)
        assert not task.done()
        # Its outcomes were not written: the deliveries come back by lease expiry and wait, pending.
        assert await wait_until(lambda: set(statuses(conn, bad)) == {"pending"}, 20)
        sent_while_quarantined = len(receiver.to("/bad"))
        # Fixed and cleared: everything reaches it (again: at-least-once), nothing is lost.
        conn.execute("UPDATE whk.whk_01_webhooks SET breaker_config = NULL WHERE id = %s", [bad])
        receiver.on("/bad", default=Reply(status=200))
        conn.execute("SELECT whk.clear_webhook_quarantine(%s)", [bad])
        assert await wait_until(lambda: statuses(conn, bad) == {"delivered": 10}, 20)
    assert sent_while_quarantined <= 10  # only what was in flight when it broke
    ids = {r.headers["webhook-id"] for r in receiver.to("/bad")}
    assert len(ids) == 10


async def test_an_error_no_webhook_explains_is_logged_shown_and_survived(db_url, conn, receiver, caplog):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/h"), ["x.*"])
    async with running(fast_settings(db_url)) as task:
        emit(conn, "x.e")
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1}, 10)
        # A bad deploy: the round's function is gone (42883, not a webhook's data, not a lost connection).
        conn.execute("DROP FUNCTION whk.dispatch_round(text, integer, integer, double precision, bigint[])")
        emit(conn, "x.e")

        def failing() -> bool:
            row = conn.execute("SELECT last_error FROM whk.dispatchers").fetchone()
            return row is not None and row[0] is not None and "42883" in row[0]

        assert await wait_until(failing, 15)
        assert not task.done()  # logged and retried with backoff, not a silent exit
        conn.execute((REPO / "sql" / "functions" / "delivery" / "dispatch_round.sql").read_text())
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 2}, 30)
        assert await wait_until(
            lambda: conn.execute("SELECT last_error FROM whk.dispatchers").fetchone() == (None,), 10
        )
    assert any(
        "dispatcher round failed unexpectedly" in r.getMessage() and r.exc_info for r in caplog.records
    )


async def test_a_row_the_request_builder_cannot_read_fails_its_own_attempts_only(db_url, conn, receiver):
    """Custom headers stored as a JSON array (the CHECK that forbids it dropped): preparing the request
    fails in Python; that webhook's attempts fail with the reason, everyone else is delivered."""
    compress_schedule(conn, [3600])
    c = make_consumer(conn)
    good = make_webhook(conn, c, receiver.url("/fine"), ["h.*"])
    bad = make_webhook(conn, c, receiver.url("/odd"), ["h.*"])
    drop_checks(conn, "whk_01_webhooks", "headers")
    conn.execute("UPDATE whk.whk_01_webhooks SET headers = '[1, 2]' WHERE id = %s", [bad])
    emit(conn, "h.e", count=3)
    async with running(fast_settings(db_url)) as task:
        assert await wait_until(lambda: statuses(conn, good) == {"delivered": 3}, 15)
        assert await wait_until(lambda: statuses(conn, bad) == {"pending": 3}, 15)
        assert not task.done()
    details = conn.execute(
        "SELECT DISTINCT error_detail FROM whk.whk_03_entregas_tentativas WHERE webhook_id = %s", [bad]
    ).fetchall()
    assert len(details) == 1 and "cannot prepare: AttributeError" in details[0][0]
    assert receiver.to("/odd") == []
