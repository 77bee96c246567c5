"""kill -9 of a `whk dispatcher` in the middle of a history flush (whk.record_outcomes writing a group of
finished requests into the attempt log) duplicates nothing and loses nothing: the flush's transaction is
rolled back with the dead client, the deliveries it carried come back when their lease expires, and a
second dispatcher delivers them again with the same webhook-id (at-least-once)."""

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
FLUSH_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%whk.record_outcomes(%%'"
    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


def one(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args or None).fetchone()
    assert row is not None
    return row[0]


async def test_kill_9_during_a_history_flush_duplicates_and_loses_nothing(
    db_url: str, conn: psycopg.Connection[Any]
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
        make_webhook(conn, consumer, rcv.url("/h"), ["order.*"], max_in_flight=20)
        emit(conn, "order.created", {"pad": "x" * 200}, count=EVENTS)
        # Every flush updates the consumer's usage row: holding it stops the dispatcher's first flush in the
        # middle of its statement, after its requests were answered.
        holder = psycopg.connect(db_url)
        holder.execute("SELECT 1 FROM whk.whk_04_assinantes WHERE id = %s FOR NO KEY UPDATE", (consumer,))
        victim = start_process(db_url, "victim")
        try:
            await async_wait_for(lambda: one(conn, FLUSH_WAITING) >= 1, 60, "a history flush in progress")
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
        survivor = start_process(db_url, "survivor")
        try:
            await async_wait_for(
                lambda: (
                    one(conn, "SELECT count(*) FROM whk.whk_03_entregas WHERE status = 'delivered'") == EVENTS
                ),
                90,
                "every event delivered after the restart",
                interval=0.2,
            )
        finally:
            assert stop_process(survivor) == 0

        deliveries = conn.execute(
            "SELECT id, 'msg_' || replace(event_id::text, '-', ''), attempt_ids"
            " FROM whk.whk_03_entregas ORDER BY id"
        ).fetchall()
        seen = Counter(s.headers["webhook-id"] for s in rcv.seen)
        bodies: dict[str, set[bytes]] = {}
        for s in rcv.seen:
            bodies.setdefault(s.headers["webhook-id"], set()).add(s.body)
        # Nothing lost: every delivery's webhook-id (msg_ + its event_id) reached the receiver, always
        # with the same body; the ones redelivered after the kill reused it.
        assert set(seen) == {event_id for _, event_id, _ in deliveries}
        assert all(len(b) == 1 for b in bodies.values())
        assert sum(seen.values()) - EVENTS >= 1  # the cut-off flush's requests were sent again
        # Nothing duplicated: one attempt row per request the receiver answered at most, each delivery's
        # attempts listed once, and every attempt it lists exists.
        attempt_ids = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT id, coalesce(delivery_ids, ARRAY[delivery_id]) FROM whk.whk_03_entregas_tentativas"
            )
        }
        assert len(attempt_ids) <= len(rcv.seen)
        for d, event_id, listed in deliveries:
            assert len(listed) == len(set(listed)) >= 1
            assert set(listed) <= set(attempt_ids)
            assert all(d in attempt_ids[a] for a in listed)
            assert len(listed) <= seen[event_id]
