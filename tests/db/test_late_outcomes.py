"""A dispatcher that lost its lease (stalled past it: a long pause, a network partition) records its outcome
late, after another dispatcher re-sent the delivery and finished it, which moved it to
whk.delivery_history. The late outcome changes nothing (the delivery stays finished, once), but its
request did reach the receiver, so the attempt log keeps it: the debugging record of at-least-once."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import claim, record
from tests.support.delivery import emit, make_consumer, make_webhook, route

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def test_outcome_after_another_dispatcher_finished_the_delivery_is_logged_not_applied(
    conn: psycopg.Connection[Any],
) -> None:
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"])
    emit(conn, "l.e")
    assert route(conn) == 1
    ((d, *_),) = claim(conn, who="stalled")
    assert conn.execute("SELECT whk.reclaim_expired_leases(now() + interval '1 min')").fetchone() == (1,)
    ((again, *_),) = claim(conn, who="d2")
    assert again == d
    assert record(conn, [{"id": d, "webhook_id": hook, "state": "delivered", "attempt_no": 2}], who="d2") == 1
    assert conn.execute("SELECT count(*) FROM whk.delivery_history WHERE id = %s", (d,)).fetchone() == (1,)

    late = [{"id": d, "webhook_id": hook, "state": "pending", "success": False, "next_attempt_at": None}]
    assert record(conn, late, who="stalled") == 0  # not applied: the delivery stays delivered, once
    rows = conn.execute("SELECT status, attempts, attempt_ids FROM whk.whk_03_entregas WHERE id = %s", (d,))
    ((status, attempts, attempt_ids),) = rows.fetchall()
    assert (status, attempts, len(attempt_ids)) == ("delivered", 2, 1)
    assert conn.execute("SELECT count(*) FROM whk.delivery_queue").fetchone() == (0,)
    # Both requests reached the receiver: both are in the attempt log, the late one by its dispatcher.
    logged = conn.execute(
        "SELECT dispatcher_id FROM whk.whk_03_entregas_tentativas WHERE delivery_id = %s ORDER BY id", (d,)
    ).fetchall()
    assert logged == [("d2",), ("stalled",)]
