"""kill -9 of a `whk dispatcher` in the middle of a history flush (whk.record_outcomes writing a group of
finished requests into the attempt log and moving the finished deliveries from whk.delivery_queue to
whk.delivery_history) duplicates nothing and loses nothing: the flush's transaction is rolled back with the
dead client, the deliveries it carried come back when their lease expires, and a second dispatcher delivers
them again with the same webhook-id (at-least-once). Afterwards every routed (event, webhook) pair is one
delivery, in exactly one of the two tables, and no attempt was logged more often than it was sent.

The flush is cut off at either of its two statements: the first (attempt log, breaker, usage), held on the
consumer's usage row, or the second (the deliveries' new states and the move to the history), held on the
history table itself, after the first one has written its attempts."""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.delivery import emit, make_consumer, make_webhook
from tests.support.dispatch import compress_schedule, start_process, stop_process
from tests.support.http_receivers import receiver
from tests.support.wait import async_wait_for

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

EVENTS = 200
PATHS = ("/a", "/b")  # two webhooks, each subscribed to every event
FLUSH = "a.query LIKE '%%whk.record_outcomes(%%' AND a.pid <> pg_backend_pid()"
FLUSH_WAITING = f"SELECT count(*) FROM pg_stat_activity a WHERE {FLUSH} AND a.wait_event_type = 'Lock'"
# A flush waiting for the history table: its first statement (the attempt log) has run.
FLUSH_WAITING_FOR_HISTORY = (
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    f" WHERE {FLUSH} AND NOT l.granted AND l.relation = 'whk.delivery_history'::regclass"
)


def one(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args or None).fetchone()
    assert row is not None
    return row[0]


def hold_flushes(db_url: str, consumer: int, stage: str) -> psycopg.Connection[Any]:
    """A transaction that stops every flush at ``stage`` until it is rolled back."""
    holder = psycopg.connect(db_url)
    if stage == "attempt log":
        # Every flush's first statement updates the consumer's usage row.
        holder.execute("SELECT 1 FROM whk.whk_04_assinantes WHERE id = %s FOR NO KEY UPDATE", (consumer,))
    else:
        # The second statement writes the history (its plan locks the table even when nothing finished);
        # reads of the history (the view, the claim) are not blocked by a SHARE lock.
        holder.execute("LOCK TABLE whk.delivery_history IN SHARE MODE")
    return holder


@pytest.mark.parametrize("stage", ["attempt log", "history move"])
async def test_kill_9_during_a_history_flush_duplicates_and_loses_nothing(
    db_url: str, conn: psycopg.Connection[Any], stage: str
) -> None:
    # A backend whose client died notices it while it waits (instead of committing for a dead client once
    # its lock comes): the flush below is then cut off mid-statement, the case under test.
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET client_connection_check_interval = '100ms'").format(
            sql.Identifier(conn.info.dbname)
        )
    )
    compress_schedule(conn, [0.2, 0.5])
    consumer = make_consumer(conn)
    async with receiver() as rcv:
        hooks = {
            make_webhook(conn, consumer, rcv.url(path), ["order.*"], max_in_flight=20): path for path in PATHS
        }
        emit(conn, "order.created", {"pad": "x" * 200}, count=EVENTS)
        holder = hold_flushes(db_url, consumer, stage)
        victim = start_process(db_url, "victim")
        try:
            waiting = FLUSH_WAITING if stage == "attempt log" else FLUSH_WAITING_FOR_HISTORY
            await async_wait_for(lambda: one(conn, waiting) >= 1, 60, f"a history flush held at its {stage}")
            answered_before_kill = rcv.count
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            # The victim's backends see their client gone and roll the flush back.
            await async_wait_for(lambda: one(conn, FLUSH_WAITING) == 0, 30, "the cut-off flush to end")
        finally:
            holder.rollback()
            holder.close()
            stop_process(victim)
        assert answered_before_kill >= 1
        assert (
            one(conn, "SELECT count(*) FROM whk.whk_03_entregas_tentativas WHERE dispatcher_id = 'victim'")
            == 0
        )
        assert one(conn, "SELECT count(*) FROM whk.delivery_history") == 0  # the cut-off move left nothing
        survivor = start_process(db_url, "survivor")
        try:
            await async_wait_for(
                lambda: (
                    one(conn, "SELECT count(*) FROM whk.whk_03_entregas WHERE status = 'delivered'")
                    == EVENTS * len(PATHS)
                ),
                90,
                "every event delivered after the restart",
                interval=0.2,
            )
        finally:
            assert stop_process(survivor) == 0

        # Nothing lost, nothing doubled: each routed (event, webhook) pair is one delivery, finished, in the
        # history only; the live queue is empty and no id is in both tables.
        events = {
            r[0] for r in conn.execute("SELECT event_id FROM whk.outbox WHERE event_type = 'order.created'")
        }
        assert len(events) == EVENTS
        pairs = Counter(
            (r[0], r[1]) for r in conn.execute("SELECT event_id, webhook_id FROM whk.whk_03_entregas")
        )
        assert pairs == Counter({(e, h): 1 for e in events for h in hooks})
        assert one(conn, "SELECT count(*) FROM whk.delivery_queue") == 0
        assert (
            one(conn, "SELECT count(*) FROM whk.delivery_queue q JOIN whk.delivery_history h USING (id)") == 0
        )
        assert one(conn, "SELECT count(DISTINCT id) FROM whk.delivery_history") == EVENTS * len(PATHS)

        deliveries = conn.execute(
            "SELECT id, webhook_id, 'msg_' || replace(event_id::text, '-', ''), attempt_ids"
            " FROM whk.delivery_history ORDER BY id"
        ).fetchall()
        # Requests the receiver answered, per (webhook, webhook-id): webhook-id is the event's, the same for
        # both webhooks.
        seen = Counter((s.path, s.headers["webhook-id"]) for s in rcv.seen)
        bodies: dict[tuple[str, str], set[bytes]] = {}
        for s in rcv.seen:
            bodies.setdefault((s.path, s.headers["webhook-id"]), set()).add(s.body)
        # Every delivery reached its webhook, always with the same body; the ones redelivered after the kill
        # reused their webhook-id.
        assert set(seen) == {(hooks[hook], msg) for _, hook, msg, _ in deliveries}
        assert all(len(b) == 1 for b in bodies.values())
        assert sum(seen.values()) - EVENTS * len(PATHS) >= 1  # the cut-off flush's requests were sent again
        # Attempts at least once, never more than sent: one attempt row per request the receiver answered at
        # most, per delivery too; each delivery's attempts listed once, and every attempt it lists exists and
        # carried it.
        attempt_members = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT id, coalesce(delivery_ids, ARRAY[delivery_id]) FROM whk.whk_03_entregas_tentativas"
            )
        }
        assert len(attempt_members) <= len(rcv.seen)
        logged = Counter(d for members in attempt_members.values() for d in members)
        for d, hook, msg, listed in deliveries:
            assert len(listed) == len(set(listed)) >= 1
            assert set(listed) <= set(attempt_members)
            assert all(d in attempt_members[a] for a in listed)
            assert len(listed) <= logged[d] <= seen[(hooks[hook], msg)]
