"""What a consumer's status, a paused and a deleted webhook do to deliveries (docs/delivery-states.md).

A suspended consumer is paused everywhere (deliveries wait, pending; nothing is lost); a disabled one is
parked like a disabled webhook and released when it is active again; a paused webhook still gets the events
committed meanwhile; a deleted webhook's deliveries that were in flight end cancelled, never pending forever,
and a retry never re-queues them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import record
from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.resources import make_delivery

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def claim(conn: psycopg.Connection[Any], who: str = "d1") -> list[tuple[int, int]]:
    """(delivery id, commit_seq) of everything claimed, in the order handed out."""
    rows = conn.execute(
        "SELECT delivery_id, commit_seq FROM whk.claim_deliveries(%s, 100, 30)", [who]
    ).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


def set_status(conn: psycopg.Connection[Any], consumer: int, status: str) -> tuple[bool, int, int]:
    row = conn.execute(
        "SELECT changed, parked, released FROM whk.set_consumer_status(%s, %s)", [consumer, status]
    ).fetchone()
    assert row is not None
    return bool(row[0]), int(row[1]), int(row[2])


def test_a_suspended_consumer_is_served_nothing_and_loses_nothing(conn):
    c = make_consumer(conn)
    hooks = [make_webhook(conn, c, URL, ["s.*"]) for _ in range(2)]
    emit(conn, "s.e", count=2)
    route(conn)
    assert set_status(conn, c, "suspended") == (True, 0, 0)
    assert set_status(conn, c, "suspended") == (False, 0, 0)  # already suspended
    assert claim(conn) == []
    # Committed while suspended: routed to its webhooks, none taken at routing time.
    emit(conn, "s.e")
    taken = conn.execute("SELECT delivery_id FROM whk.route_and_take(100, 'd1', 100, 30)").fetchall()
    assert [r[0] for r in taken] == [None]
    assert claim(conn) == []
    assert [statuses(conn, h) for h in hooks] == [{"pending": 3}] * 2
    assert set_status(conn, c, "active") == (True, 0, 0)  # nothing was parked
    assert len(claim(conn)) == 6


def test_disabling_a_consumer_parks_its_deliveries_and_activating_it_releases_them(conn):
    c = make_consumer(conn)
    other_consumer = make_consumer(conn, name="other")
    a = make_webhook(conn, c, URL, ["s.*"])
    b = make_webhook(conn, c, URL, ["s.*"])  # disabled on its own: stays parked for whk.resume_webhook
    elsewhere = make_webhook(conn, other_consumer, URL, ["s.*"])
    emit(conn, "s.e")
    route(conn)
    conn.execute("SELECT whk.disable_webhook(%s, 'operator')", [b])
    assert set_status(conn, c, "disabled") == (True, 1, 0)
    assert statuses(conn, a) == {"parked": 1}
    emit(conn, "s.e")  # committed while disabled: not routed to its webhooks
    route(conn)
    assert (statuses(conn, a), statuses(conn, b), statuses(conn, elsewhere)) == (
        {"parked": 1},
        {"parked": 1},
        {"pending": 2},
    )
    # Only the other consumer's deliveries go out.
    assert len(claim(conn)) == 2
    assert statuses(conn, elsewhere) == {"in_flight": 2}
    assert set_status(conn, c, "active") == (True, 0, 1)
    assert (statuses(conn, a), statuses(conn, b)) == ({"pending": 1}, {"parked": 1})
    assert len(claim(conn)) == 1


def test_a_bad_consumer_status_is_refused_with_a_hint(conn):
    c = make_consumer(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute("SELECT whk.set_consumer_status(%s, 'paused')", [c])
    assert "active, suspended, disabled" in (caught.value.diag.message_hint or "")
    with pytest.raises(psycopg.errors.NoDataFound) as caught_missing:
        conn.execute("SELECT whk.set_consumer_status(987654, 'active')")
    assert caught_missing.value.diag.message_hint is not None


def test_events_committed_while_a_webhook_is_paused_go_out_in_order_after_the_resume(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["p.*"])
    emit(conn, "p.e")
    route(conn)
    conn.execute("SELECT whk.pause_webhook(%s)", [hook])
    emit(conn, "p.e", count=3)  # the receiver's maintenance window
    taken = conn.execute("SELECT delivery_id FROM whk.route_and_take(100, 'd1', 100, 30)").fetchall()
    assert [r[0] for r in taken] == [None]  # routed, nothing taken
    assert claim(conn) == []
    assert statuses(conn, hook) == {"pending": 4}
    conn.execute("SELECT whk.resume_webhook(%s)", [hook])
    out = claim(conn)
    assert len(out) == 4
    assert [seq for _, seq in out] == sorted(seq for _, seq in out)


def _in_flight_then_deleted(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["x.*"])
    emit(conn, "x.e")
    route(conn)
    [(delivery, _)] = claim(conn)
    assert conn.execute("SELECT deleted, cancelled FROM whk.delete_webhook(%s)", [hook]).fetchone() == (
        True,
        0,
    )
    return hook, delivery


@pytest.mark.parametrize("end", ["failure", "dead", "release", "reclaim"])
def test_an_in_flight_delivery_of_a_deleted_webhook_ends_cancelled(conn, end):
    hook, delivery = _in_flight_then_deleted(conn)
    if end == "failure":
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert (
            record(conn, [{"id": delivery, "webhook_id": hook, "state": "pending", "next_attempt_at": later}])
            == 1
        )
    elif end == "dead":
        assert (
            record(conn, [{"id": delivery, "webhook_id": hook, "state": "dead", "dead_reason": "last"}]) == 1
        )
    elif end == "release":
        assert conn.execute("SELECT whk.release_deliveries('d1')").fetchone() == (1,)
    else:
        conn.execute(
            "UPDATE whk.delivery_queue SET lease_until = now() - interval '1 s' WHERE id = %s", [delivery]
        )
        assert conn.execute("SELECT whk.reclaim_expired_leases()").fetchone() == (1,)
    row = conn.execute(
        "SELECT status, lease_until, claimed_by FROM whk.whk_03_entregas WHERE id = %s", [delivery]
    ).fetchone()
    assert row == ("cancelled", None, None)


def test_a_deleted_webhooks_delivery_that_succeeded_stays_delivered(conn):
    hook, delivery = _in_flight_then_deleted(conn)
    assert (
        record(conn, [{"id": delivery, "webhook_id": hook, "state": "delivered", "response_status": 200}])
        == 1
    )
    assert statuses(conn, hook) == {"delivered": 1}


def test_retry_never_requeues_a_deleted_webhooks_deliveries(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["order.*"])
    kept = make_webhook(conn, c, URL, ["order.*"])
    ids = [make_delivery(conn, hook, status=s) for s in ("dead", "pending", "delivered")]
    other = make_delivery(conn, kept, status="dead")
    conn.execute("SELECT whk.delete_webhook(%s)", [hook])
    assert conn.execute("SELECT whk.retry_deliveries(%s)", [[*ids, other]]).fetchone() == (1,)
    assert conn.execute("SELECT whk.retry_delivery(%s)", [ids[0]]).fetchone() == (False,)
    assert statuses(conn, hook) == {"dead": 1, "cancelled": 1, "delivered": 1}
    assert statuses(conn, kept) == {"pending": 1}


def test_a_suspended_consumers_due_deliveries_do_not_keep_the_dispatcher_busy(conn):
    """Nothing of a suspended consumer can be claimed: no round asks for another, no wake-up is due."""
    c = make_consumer(conn)
    make_webhook(conn, c, URL, ["s.*"])
    emit(conn, "s.e", count=2)
    route(conn)
    set_status(conn, c, "suspended")
    rows = conn.execute("SELECT more_due, delivery_id FROM whk.dispatch_round('d1', 100, 100, 30)").fetchall()
    assert rows == [(False, None)]
    assert conn.execute("SELECT whk.next_wakeup()").fetchone() == (None,)
    set_status(conn, c, "active")
    assert conn.execute("SELECT whk.next_wakeup() <= clock_timestamp()").fetchone() == (True,)
