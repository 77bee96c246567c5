"""Wake-up contract: NOTIFY whk_outbox only while a live dispatcher is idle, at most once per statement."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.db.capture_support import HIJACKERS, Notifications, register_dispatcher, run_and_roll_back

pytestmark = pytest.mark.db


@pytest.fixture
def captured(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE TABLE public.doc (id int PRIMARY KEY, v int)")
    conn.execute("SELECT whk.enable_capture('public.doc', 'doc')")
    conn.execute("SELECT whk.register_event_type('billing.reminder_due', '{\"type\": \"object\"}')")
    return conn


@pytest.fixture
def listener(db_url: str) -> Any:
    n = Notifications(db_url)
    yield n
    n.close()


def test_no_dispatcher_or_busy_dispatcher_means_no_notify(
    captured: psycopg.Connection[Any], listener: Notifications
) -> None:
    captured.execute("INSERT INTO public.doc VALUES (1, 1)")
    captured.execute("SELECT whk.emit('billing.reminder_due', '{}')")
    assert listener.drain() == []
    register_dispatcher(captured, "busy", idle=False)
    captured.execute("INSERT INTO public.doc VALUES (2, 1)")
    captured.execute("UPDATE public.doc SET v = v + 1")
    captured.execute("SELECT whk.emit('billing.reminder_due', '{}')")
    assert listener.drain() == []


def test_idle_dispatcher_is_woken_once_per_transaction(
    captured: psycopg.Connection[Any], listener: Notifications
) -> None:
    register_dispatcher(captured, "d1", idle=False)
    assert captured.execute("SELECT whk.dispatcher_set_idle('d1', true)").fetchone() == (True,)
    with captured.transaction():
        for i in range(5):
            captured.execute("INSERT INTO public.doc VALUES (%s, 0)", (i,))
        captured.execute("UPDATE public.doc SET v = 1")
        captured.execute("SELECT whk.emit('billing.reminder_due', '{}')")
    assert listener.drain() == [""]  # seven statements, one notification (identical ones fold)
    captured.execute("INSERT INTO public.doc VALUES (100, 0)")
    captured.execute("INSERT INTO public.doc VALUES (101, 0)")
    assert listener.drain() == ["", ""]  # one per committing transaction while idle
    captured.execute("UPDATE public.doc SET v = 2 WHERE id = 100")
    captured.execute("DELETE FROM public.doc WHERE id = 101")
    assert listener.drain() == ["", ""]  # UPDATE and DELETE statements wake it too
    captured.execute("SELECT whk.emit('billing.reminder_due', '{}')")
    assert listener.drain() == [""]  # and whk.emit on its own


def test_statements_that_write_no_event_do_not_notify(
    captured: psycopg.Connection[Any], listener: Notifications
) -> None:
    captured.execute("INSERT INTO public.doc VALUES (1, 1)")
    register_dispatcher(captured, "d1", idle=True)
    captured.execute("UPDATE public.doc SET v = v")  # no-op update: nothing written
    captured.execute("DELETE FROM public.doc WHERE false")
    assert listener.drain() == []
    # More than 8 rows: the statement is EXECUTEd (planned for its size), which does not set FOUND itself.
    captured.execute("INSERT INTO public.doc SELECT g, 0 FROM generate_series(2, 20) AS g")
    assert listener.drain() == [""]
    captured.execute("UPDATE public.doc SET v = v")
    assert listener.drain() == []
    captured.execute("UPDATE public.doc SET v = v + 1")
    assert listener.drain() == [""]


def test_busy_again_stops_notifications_and_rollback_sends_none(
    captured: psycopg.Connection[Any], listener: Notifications
) -> None:
    register_dispatcher(captured, "d1", idle=True)
    run_and_roll_back(captured, "INSERT INTO public.doc VALUES (1, 1)")
    assert listener.drain() == []  # NOTIFY is transactional
    captured.execute("SELECT whk.dispatcher_set_idle('d1', false)")
    captured.execute("INSERT INTO public.doc VALUES (2, 1)")
    assert listener.drain() == []


def test_a_stale_idle_dispatcher_does_not_make_every_commit_notify(
    captured: psycopg.Connection[Any], listener: Notifications
) -> None:
    register_dispatcher(captured, "crashed", idle=True)
    captured.execute("UPDATE whk.dispatchers SET heartbeat_at = now() - interval '5 minutes'")
    captured.execute("INSERT INTO public.doc VALUES (1, 1)")
    assert listener.drain() == []
    assert captured.execute("SELECT whk.wake_dispatchers()").fetchone() == (False,)


def test_set_idle_reports_unknown_dispatchers_and_refreshes_the_heartbeat(
    captured: psycopg.Connection[Any],
) -> None:
    assert captured.execute("SELECT whk.dispatcher_set_idle('nobody', true)").fetchone() == (False,)
    register_dispatcher(captured, "d1")
    captured.execute("UPDATE whk.dispatchers SET heartbeat_at = now() - interval '1 hour'")
    captured.execute("SELECT whk.dispatcher_set_idle('d1', true)")
    row = captured.execute(
        "SELECT idle, heartbeat_at > now() - interval '1 minute' FROM whk.dispatchers WHERE id = 'd1'"
    ).fetchone()
    assert row == (True, True)


def test_the_declare_idle_then_recheck_protocol_loses_no_wakeup(
    captured: psycopg.Connection[Any], db_url: str
) -> None:
    """A commit after the dispatcher went idle notifies; one committed before is seen by its re-check."""
    register_dispatcher(captured, "d1")
    with psycopg.connect(db_url, autocommit=True) as dispatcher:
        dispatcher.execute("LISTEN whk_outbox")
        # 1. an event committed while the dispatcher is busy: no notify ...
        captured.execute("INSERT INTO public.doc VALUES (1, 1)")
        # 2. the dispatcher declares idle, then re-checks the outbox before sleeping: it finds that event.
        dispatcher.execute("SELECT whk.dispatcher_set_idle('d1', true)")
        pending = dispatcher.execute("SELECT count(*) FROM whk.outbox WHERE status = 'pending'").fetchone()
        assert pending == (1,)
        dispatcher.execute("UPDATE whk.outbox SET status = 'routed'")
        # 3. while it sleeps, the next commit wakes it.
        captured.execute("INSERT INTO public.doc VALUES (2, 1)")
        got = [n.channel for n in dispatcher.notifies(timeout=2, stop_after=1)]
        assert got == ["whk_outbox"]


def test_wake_dispatchers_needs_no_set_clause_and_cannot_be_redirected(
    captured: psycopg.Connection[Any], listener: Notifications
) -> None:
    """Every name in whk.wake_dispatchers is qualified (migration 0020): no SET clause for each caller to
    pay, and a caller's schema shadowing the functions and the operator it uses changes nothing."""
    config = captured.execute(
        "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'whk.wake_dispatchers()'::regprocedure"
    ).fetchone()
    assert config == (True, None)
    captured.execute(HIJACKERS)
    register_dispatcher(captured, "d1", idle=True)
    captured.execute("SET search_path = evil, pg_catalog, public")
    try:
        assert captured.execute("SELECT whk.wake_dispatchers()").fetchone() == (True,)
        assert listener.drain() == [""]
        captured.execute("SELECT whk.dispatcher_set_idle('d1', false)")
        assert captured.execute("SELECT whk.wake_dispatchers()").fetchone() == (False,)
    finally:
        captured.execute("RESET search_path")


def test_the_shared_idle_test_is_inlined_into_its_callers(captured: psycopg.Connection[Any]) -> None:
    """whk.dispatcher_is_idle is the one definition of "a live dispatcher is idle"; the planner inlines it, so
    the capture triggers and whk.emit pay no function call for sharing it."""
    plan = "\n".join(
        str(r[0]) for r in captured.execute("EXPLAIN VERBOSE SELECT whk.dispatcher_is_idle()").fetchall()
    )
    assert "pg_sequence_last_value('whk.dispatcher_idle_until'::regclass)" in plan
    assert "dispatcher_is_idle" not in plan
    generated = captured.execute(
        "SELECT p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE t.tgrelid = 'public.doc'::regclass AND t.tgname = 'whk_capture_insert'"
    ).fetchone()
    assert generated is not None and "whk.dispatcher_is_idle()" in generated[0]
