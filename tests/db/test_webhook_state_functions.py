"""whk.pause_webhook and whk.delete_webhook: the webhook state changes the API makes, as SQL functions."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.resources import make_delivery

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def claim(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute("SELECT delivery_id FROM whk.claim_deliveries('d1', 100, 30)").fetchall()
    return [int(r[0]) for r in rows]


def webhook_row(conn: psycopg.Connection[Any], hook: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, disabled_reason, deleted_at IS NOT NULL FROM whk.whk_01_webhooks WHERE id = %s",
        [hook],
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_paused_webhook_keeps_its_pending_deliveries_until_it_is_resumed(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["p.*"])
    emit(conn, "p.e", count=2)
    route(conn)
    assert conn.execute("SELECT whk.pause_webhook(%s)", [hook]).fetchone() == (True,)
    assert webhook_row(conn, hook) == ("paused", None, False)
    assert conn.execute("SELECT whk.pause_webhook(%s)", [hook]).fetchone() == (False,)  # already paused
    assert claim(conn) == []
    assert statuses(conn, hook) == {"pending": 2}  # waiting, not parked
    emit(conn, "p.e")  # committed while paused: routed to it, pending until the resume
    assert route(conn) == 1
    assert statuses(conn, hook) == {"pending": 3}
    assert claim(conn) == []
    assert conn.execute("SELECT whk.resume_webhook(%s)", [hook]).fetchone() == (0,)  # nothing was parked
    assert len(claim(conn)) == 3


def test_pausing_a_disabled_webhook_keeps_its_parked_deliveries_and_reason(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["p.*"])
    emit(conn, "p.e")
    route(conn)
    conn.execute("SELECT whk.disable_webhook(%s, 'operator')", [hook])
    assert conn.execute("SELECT whk.pause_webhook(%s)", [hook]).fetchone() == (True,)
    assert webhook_row(conn, hook) == ("paused", "operator", False)
    assert statuses(conn, hook) == {"parked": 1}
    assert conn.execute("SELECT whk.resume_webhook(%s)", [hook]).fetchone() == (1,)


def test_delete_cancels_unfinished_deliveries_drops_secrets_and_leaves_the_rest(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["order.*"])
    other = make_webhook(conn, c, URL, ["order.*"])
    ids = {s: make_delivery(conn, hook, status=s) for s in ("pending", "parked", "awaiting_ack")}
    kept = {s: make_delivery(conn, hook, status=s) for s in ("in_flight", "delivered", "dead")}
    elsewhere = make_delivery(conn, other, status="pending")

    row = conn.execute("SELECT deleted, cancelled FROM whk.delete_webhook(%s)", [hook]).fetchone()
    assert row == (True, 3)
    assert webhook_row(conn, hook) == ("disabled", "deleted", True)
    now = dict(conn.execute("SELECT id, status FROM whk.whk_03_entregas").fetchall())
    assert {now[i] for i in ids.values()} == {"cancelled"}
    assert {s: now[i] for s, i in kept.items()} == {s: s for s in kept}  # in flight: its attempt finishes
    assert now[elsewhere] == "pending"
    secrets = conn.execute(
        "SELECT webhook_id, count(*) FROM whk.webhook_secrets GROUP BY webhook_id"
    ).fetchall()
    assert secrets == [(other, 1)]
    # Deleting again changes nothing; a deleted webhook cannot be paused.
    assert conn.execute("SELECT deleted, cancelled FROM whk.delete_webhook(%s)", [hook]).fetchone() == (
        False,
        0,
    )
    with pytest.raises(psycopg.errors.NoDataFound) as caught:
        conn.execute("SELECT whk.pause_webhook(%s)", [hook])
    assert caught.value.diag.message_hint is not None


@pytest.mark.parametrize(
    ("call", "hint"),
    [
        ("SELECT whk.pause_webhook(%s)", "webhook that is not deleted"),
        ("SELECT * FROM whk.delete_webhook(%s)", "existing webhook"),
    ],
)
def test_an_unknown_webhook_is_refused_with_a_hint(conn, call, hint):
    for bad in (987654, None):
        with pytest.raises(psycopg.errors.NoDataFound) as caught:
            conn.execute(call, [bad])
        assert caught.value.diag.message_primary == f"no webhook {bad if bad is not None else 'NULL'}"
        assert hint in (caught.value.diag.message_hint or "")
