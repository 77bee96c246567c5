"""Two replays of one webhook over the same events, their steps running at the same time (the job worker
runs replay jobs concurrently), still leave one delivery per (event, webhook): the deliveries relation
has no unique key any more (a pair lives in the live queue or in the partitioned history), so the replay
step itself must not create a pair another step is creating."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route
from tests.support.wait import wait_for

pytestmark = pytest.mark.db

EVENTS = 5


def start_replay(conn: psycopg.Connection[Any], webhook: int, actor: str) -> int:
    row = conn.execute(
        "SELECT whk.replay_start(%s, now() - interval '1 hour', now(), NULL, NULL, %s)", (webhook, actor)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_concurrent_replay_steps_create_each_pair_once(db_url: str, conn: psycopg.Connection[Any]) -> None:
    consumer = make_consumer(conn)
    # Subscribed after its events were routed: every event is a new pair for the replays.
    hook = make_webhook(conn, consumer, "https://example.com/h", ["nothing.*"])
    make_webhook(conn, consumer, "https://example.com/other", ["order.*"])
    emit(conn, "order.created", {}, count=EVENTS)
    assert route(conn) == EVENTS
    conn.execute("UPDATE whk.whk_01_webhooks SET event_types = '{order.*}' WHERE id = %s", (hook,))
    first, second = start_replay(conn, hook, "a"), start_replay(conn, hook, "b")

    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
        a.execute("SELECT whk.replay_step(%s, 100)", (first,))  # its new deliveries not yet committed
        b_pid = b.info.backend_pid
        errors: list[BaseException] = []

        def second_step() -> None:
            try:
                b.execute("SELECT whk.replay_step(%s, 100)", (second,))
            except BaseException as exc:  # reported by the assertion after join()
                errors.append(exc)

        runner = threading.Thread(target=second_step)
        runner.start()
        wait_for(
            lambda: (
                not runner.is_alive()
                or conn.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (b_pid,)
                ).fetchone()
                == (True,)
            ),
            30,
            "the second step done or waiting on the first",
        )
        a.commit()
        runner.join(30)
        assert not runner.is_alive() and errors == []
        b.commit()

    pairs = conn.execute(
        "SELECT event_id, count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s GROUP BY event_id", (hook,)
    ).fetchall()
    assert len(pairs) == EVENTS and all(n == 1 for _, n in pairs)
    # The second replay found the first one's deliveries and re-queued them instead.
    counts = conn.execute(
        "SELECT created, requeued FROM whk.replays WHERE id = ANY(%s) ORDER BY id", ([first, second],)
    ).fetchall()
    assert counts == [(EVENTS, 0), (0, EVENTS)]
