"""The two delivery tables (migration 0005): live work in whk.delivery_queue, finished deliveries written
once into whk.delivery_history, and whk.whk_03_entregas, the view over both, showing each delivery once.
Every function that finishes a delivery moves it; a retry of a delivered one brings it back, same id."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import URL, claim
from tests.db.test_delivery_sql import record as record_outcomes
from tests.support.delivery import emit, make_consumer, make_webhook, route

pytestmark = pytest.mark.db

FINAL = ("delivered", "cancelled", "superseded")


def where(conn: psycopg.Connection[Any], delivery_id: int) -> list[tuple[str, str]]:
    """[(table, status)] of every row holding the delivery: exactly one when the model holds."""
    return conn.execute(
        "SELECT 'queue', status FROM whk.delivery_queue WHERE id = %(id)s "
        "UNION ALL SELECT 'history', status FROM whk.delivery_history WHERE id = %(id)s",
        {"id": delivery_id},
    ).fetchall()


def assert_model_holds(conn: psycopg.Connection[Any]) -> None:
    """No finished status left in the queue, no id in both tables, the view shows each delivery once."""
    left = conn.execute(
        "SELECT id, status FROM whk.delivery_queue WHERE status = ANY (%s)", [list(FINAL)]
    ).fetchall()
    assert left == []
    both = conn.execute(
        "SELECT q.id FROM whk.delivery_queue q JOIN whk.delivery_history h ON h.id = q.id"
    ).fetchall()
    assert both == []
    dupes = conn.execute(
        "SELECT event_id, webhook_id FROM whk.whk_03_entregas GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert dupes == []


def record(conn: psycopg.Connection[Any], items: list[dict[str, Any]]) -> int:
    """whk.record_outcomes for these deliveries, each its own request of its own webhook."""
    for it in items:
        row = conn.execute("SELECT webhook_id FROM whk.whk_03_entregas WHERE id = %s", [it["id"]]).fetchone()
        assert row is not None
        it.setdefault("webhook_id", row[0])
    return record_outcomes(conn, items)


def one_delivery(conn: psycopg.Connection[Any], **hook: Any) -> tuple[int, int]:
    consumer = make_consumer(conn)
    webhook = make_webhook(conn, consumer, URL, ["order.*"], **hook)
    emit(conn, "order.created", {"n": 1})
    assert route(conn) == 1
    row = conn.execute("SELECT id FROM whk.delivery_queue WHERE webhook_id = %s", [webhook]).fetchone()
    assert row is not None
    return webhook, int(row[0])


def test_a_delivered_outcome_moves_the_row_to_the_history_once(conn):
    _, did = one_delivery(conn)
    assert [r[0] for r in claim(conn)] == [did]
    assert record(conn, [{"id": did, "state": "delivered", "response_status": 200}]) == 1
    assert where(conn, did) == [("history", "delivered")]
    row = conn.execute(
        "SELECT attempts, cardinality(attempt_ids), lease_until, claimed_by, finished_at IS NOT NULL, "
        "delivered_at IS NOT NULL, acked_at IS NOT NULL, last_status_code "
        "FROM whk.whk_03_entregas WHERE id = %s",
        [did],
    ).fetchone()
    assert row == (1, 1, None, None, True, True, True, 200)
    # The history partition the row went to is today's range (the default partition when none exists).
    assert conn.execute(
        "SELECT tableoid::regclass::text FROM whk.delivery_history WHERE id = %s", [did]
    ).fetchone() in {("whk.delivery_history_default",), (_today_partition(conn),)}
    assert_model_holds(conn)


def _today_partition(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT partition_name FROM whk.partitions WHERE parent = 'whk.delivery_history'::regclass "
        "AND NOT is_default AND now() >= range_from AND now() < range_to"
    ).fetchone()
    return str(row[0]) if row else "none"


def test_a_retry_stays_live_and_a_dead_letter_keeps_its_own_body(conn):
    _, did = one_delivery(conn)
    claim(conn)
    record(conn, [{"id": did, "state": "pending", "response_status": 500, "next_attempt_at": "2000-01-01"}])
    assert where(conn, did) == [("queue", "pending")]
    claim(conn)
    record(
        conn,
        [{"id": did, "state": "dead", "response_status": 500, "dead_reason": "HTTP 500", "attempt_no": 2}],
    )
    assert where(conn, did) == [("queue", "dead")]
    body, envelope = conn.execute(
        "SELECT d.payload, whk.event_envelope(o) FROM whk.delivery_queue d "
        "JOIN whk.outbox o ON o.id = d.outbox_id AND o.created_at = d.event_created_at WHERE d.id = %s",
        [did],
    ).fetchone()  # type: ignore[misc]
    assert body == envelope and body["data"]["n"] == 1
    assert_model_holds(conn)


def test_a_pinned_body_is_not_overwritten_when_the_delivery_dies(conn):
    _, did = one_delivery(conn)
    conn.execute('UPDATE whk.delivery_queue SET payload = \'{"version": "1.0"}\' WHERE id = %s', [did])
    conn.execute("UPDATE whk.delivery_queue SET status = 'dead', dead_at = now() WHERE id = %s", [did])
    assert conn.execute("SELECT payload FROM whk.delivery_queue WHERE id = %s", [did]).fetchone() == (
        {"version": "1.0"},
    )


def test_an_ack_finishes_and_moves_the_delivery(conn):
    _, did = one_delivery(conn)
    claim(conn)
    record(conn, [{"id": did, "state": "awaiting_ack", "ack_deadline": "2999-01-01"}])
    assert where(conn, did) == [("queue", "awaiting_ack")]
    assert conn.execute("SELECT whk.ack_delivery(%s)", [did]).fetchone() == (True,)
    assert where(conn, did) == [("history", "delivered")]
    # Idempotent: acking again answers true from the history and changes nothing.
    assert conn.execute("SELECT whk.ack_delivery(%s)", [did]).fetchone() == (True,)
    assert where(conn, did) == [("history", "delivered")]


def test_deleting_the_webhook_cancels_into_the_history(conn):
    webhook, did = one_delivery(conn)
    row = conn.execute("SELECT deleted, cancelled FROM whk.delete_webhook(%s)", [webhook]).fetchone()
    assert row == (True, 1)
    assert where(conn, did) == [("history", "cancelled")]
    assert_model_holds(conn)


def test_supersede_moves_the_replaced_deliveries(conn):
    consumer = make_consumer(conn)
    webhook = make_webhook(
        conn, consumer, URL, ["order.*"], delivery_mode="delayed", delay_seconds=60, supersede_by_key=True
    )
    for n in range(3):
        emit(conn, "order.updated", {"n": n}, key="order-1")
        route(conn)
    rows = conn.execute(
        "SELECT status, count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s GROUP BY 1 ORDER BY 1",
        [webhook],
    ).fetchall()
    assert rows == [("pending", 1), ("superseded", 2)]
    assert conn.execute(
        "SELECT count(*) FROM whk.delivery_history WHERE status = 'superseded'"
    ).fetchone() == (2,)
    assert_model_holds(conn)


def test_retrying_a_delivered_delivery_brings_the_same_row_back(conn):
    _, did = one_delivery(conn)
    claim(conn)
    record(conn, [{"id": did, "state": "delivered", "response_status": 200}])
    event_id = conn.execute("SELECT event_id FROM whk.whk_03_entregas WHERE id = %s", [did]).fetchone()
    assert conn.execute("SELECT whk.retry_deliveries(%s)", [[did]]).fetchone() == (1,)
    assert where(conn, did) == [("queue", "pending")]
    assert (
        conn.execute("SELECT event_id FROM whk.whk_03_entregas WHERE id = %s", [did]).fetchone() == event_id
    )
    # Sent again and delivered: back in the history, one row.
    assert [r[0] for r in claim(conn)] == [did]
    record(conn, [{"id": did, "state": "delivered", "response_status": 200, "attempt_no": 2}])
    assert where(conn, did) == [("history", "delivered")]
    assert_model_holds(conn)


def test_the_view_refuses_writes_with_a_clear_error(conn):
    _, did = one_delivery(conn)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="whk_03_entregas"):
        conn.execute("UPDATE whk.whk_03_entregas SET status = 'dead' WHERE id = %s", [did])


def test_archive_leaves_live_rows_alone(conn):
    _, did = one_delivery(conn)
    assert conn.execute("SELECT whk.archive_deliveries(%s)", [[did]]).fetchone() == (0,)
    assert where(conn, did) == [("queue", "pending")]
    assert conn.execute("SELECT whk.reopen_deliveries(%s)", [[did]]).fetchone() == (0,)
    assert where(conn, did) == [("queue", "pending")]
