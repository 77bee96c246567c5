"""Outbox retention by partition: create ahead, drop old partitions only when no work references them."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest

from tests.db.test_retention import outbox_day

pytestmark = pytest.mark.db


def partitions(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'whk.outbox'::regclass ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def old_event(
    conn: psycopg.Connection[Any], days_ago: int, status: str = "routed", valid: bool | None = None
) -> tuple[int, Any]:
    row = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at, status, valid)"
        " VALUES ('system.startup', '{}', 'EMIT', now() - make_interval(days => %s), %s, %s)"
        " RETURNING id, created_at",
        (days_ago, status, valid),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def make_old_partitions(conn: psycopg.Connection[Any], *days_ago: int) -> None:
    for d in days_ago:
        outbox_day(conn, d)


def add_delivery(conn: psycopg.Connection[Any], outbox_id: int, created_at: Any, status: str) -> int:
    """A delivery of the event in `status`: live ones in the queue (a dead one made dead by an UPDATE, as the
    hot path does, so it gets its own copy of the body), finished ones moved to the history."""
    consumer = conn.execute(
        "INSERT INTO whk.whk_04_assinantes (name) VALUES ('c-' || gen_random_uuid()) RETURNING id"
    ).fetchone()
    assert consumer is not None
    hook = conn.execute(
        "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types)"
        " VALUES (%s, 'h', 'https://example.com/h', '{*}') RETURNING id",
        (consumer[0],),
    ).fetchone()
    assert hook is not None
    row = conn.execute(
        "INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,"
        " consumer_id) VALUES (gen_random_uuid(), %s, %s, 'system.startup', %s, %s) RETURNING id",
        (outbox_id, created_at, hook[0], consumer[0]),
    ).fetchone()
    assert row is not None
    conn.execute("UPDATE whk.delivery_queue SET status = %s WHERE id = %s", (status, row[0]))
    conn.execute("SELECT whk.archive_deliveries(ARRAY[%s]::bigint[])", (row[0],))
    return int(row[0])


def test_create_partitions_is_idempotent_and_moves_stray_rows_out_of_default(
    conn: psycopg.Connection[Any],
) -> None:
    assert partitions(conn) == ["outbox_default"]
    conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    conn.execute("SELECT whk.enable_capture('public.t', 't')")
    conn.execute("INSERT INTO public.t VALUES (1), (2)")  # lands in outbox_default: no partition yet
    before = conn.execute("SELECT id, event_id FROM whk.outbox ORDER BY id").fetchall()
    made = conn.execute("SELECT * FROM whk.outbox_create_partitions('3 days', 'day')").fetchall()
    created = [r[0] for r in made]
    assert len(created) == 4  # today + 3 days ahead
    assert conn.execute("SELECT * FROM whk.outbox_create_partitions('3 days', 'day')").fetchall() == []
    assert conn.execute("SELECT count(*) FROM whk.outbox_default").fetchone() == (0,)
    assert conn.execute("SELECT id, event_id FROM whk.outbox ORDER BY id").fetchall() == before
    where = conn.execute("SELECT DISTINCT tableoid::regclass::text FROM whk.outbox").fetchall()
    assert where == [(f"whk.{created[0]}",)]
    conn.execute("INSERT INTO public.t VALUES (3)")  # new events go to today's partition
    assert conn.execute("SELECT count(*) FROM whk.outbox_default").fetchone() == (0,)
    ranges = conn.execute(
        "SELECT range_from, range_to FROM whk.outbox_partitions WHERE NOT is_default ORDER BY range_from"
    ).fetchall()
    assert len(ranges) == 4
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous days
    assert all((hi - lo).days == 1 for lo, hi in ranges)
    default = conn.execute("SELECT partition_name FROM whk.outbox_partitions WHERE is_default").fetchall()
    assert default == [("whk.outbox_default",)]
    weekly = conn.execute("SELECT * FROM whk.outbox_create_partitions('20 days', 'week')").fetchall()
    assert weekly  # weeks not already covered by the daily partitions
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="day, week or month"):
        conn.execute("SELECT whk.outbox_create_partitions('1 day', 'hour')")


def test_drop_partitions_keeps_every_partition_that_holds_work(conn: psycopg.Connection[Any]) -> None:
    make_old_partitions(conn, 40, 41, 42, 43, 44, 45, 46)
    old_event(conn, 40, "routed")  # done: droppable
    old_event(conn, 41, "pending")  # not routed yet
    # Failed the router's schema validation: the router marks it valid = false and routes it (there is no
    # 'invalid' status), kept for an operator's look.
    old_event(conn, 42, "routed", valid=False)
    # A dead letter keeps its own copy of the body: it does not hold its event's day.
    dead = add_delivery(conn, *old_event(conn, 43, "routed"), "dead")
    add_delivery(conn, *old_event(conn, 44, "routed"), "pending")
    add_delivery(conn, *old_event(conn, 45, "routed"), "delivered")
    # 46: an empty old partition
    recent = old_event(conn, 0, "routed")
    result = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM whk.outbox_drop_partitions('30 days')")}
    assert result == {
        "whk.outbox_old40": (True, result["whk.outbox_old40"][1]),
        "whk.outbox_old41": (False, "kept: pending events"),
        "whk.outbox_old42": (False, "kept: invalid events"),
        "whk.outbox_old43": (True, result["whk.outbox_old43"][1]),
        "whk.outbox_old44": (False, "kept: unfinished deliveries"),
        "whk.outbox_old45": (True, result["whk.outbox_old45"][1]),
        "whk.outbox_old46": (True, result["whk.outbox_old46"][1]),
    }
    assert all("events from" in why and why.endswith("removed") for ok, why in result.values() if ok)
    assert set(partitions(conn)) == {"outbox_default", "outbox_old41", "outbox_old42", "outbox_old44"}
    kept = conn.execute(
        "SELECT status, payload IS NOT NULL FROM whk.delivery_queue WHERE id = %s", (dead,)
    ).fetchone()
    assert kept == ("dead", True)
    assert conn.execute("SELECT count(*) FROM whk.outbox WHERE id = %s", (recent[0],)).fetchone() == (1,)
    # Invalid events can be released explicitly; the default partition is never dropped.
    dropped = conn.execute(
        "SELECT partition_name FROM whk.outbox_drop_partitions('30 days', keep_invalid => false)"
        " WHERE dropped"
    ).fetchall()
    assert dropped == [("whk.outbox_old42",)]
    assert "outbox_default" in partitions(conn)


def test_kept_partitions_take_no_lock_and_max_drops_bounds_a_call(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    make_old_partitions(conn, 40, 41, 42)
    add_delivery(conn, *old_event(conn, 40, "routed"), "pending")
    old_event(conn, 41, "routed")
    old_event(conn, 42, "routed")
    # Another transaction is writing a delivery (the hot path): it holds ROW EXCLUSIVE on delivery_queue.
    with psycopg.connect(db_url) as busy:
        busy.execute("UPDATE whk.delivery_queue SET updated_at = now()")
        # Checking a partition that is kept takes no lock, so it answers at once instead of waiting out the
        # lock timeout; a droppable one needs the SHARE lock on deliveries and is kept as busy this time.
        rows = conn.execute(
            "SELECT partition_name, dropped, reason FROM whk.outbox_drop_partitions('30 days')"
        )
        assert [tuple(r) for r in rows] == [
            ("whk.outbox_old42", False, "kept: busy (lock timeout), try again later"),
            ("whk.outbox_old41", False, "kept: busy (lock timeout), try again later"),
            ("whk.outbox_old40", False, "kept: unfinished deliveries"),
        ]
        busy.rollback()
    first = conn.execute(
        "SELECT partition_name FROM whk.outbox_drop_partitions('30 days', max_drops => 1) WHERE dropped"
    ).fetchall()
    assert first == [("whk.outbox_old42",)]  # the oldest first
    assert "outbox_old41" in partitions(conn)
    second = conn.execute(
        "SELECT partition_name FROM whk.outbox_drop_partitions('30 days', max_drops => 1) WHERE dropped"
    ).fetchall()
    assert second == [("whk.outbox_old41",)]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_drops"):
        conn.execute("SELECT * FROM whk.outbox_drop_partitions('30 days', max_drops => 0)")
