"""Aggregate capture: the rows of one transaction that share an aggregate key become one event at commit
(whk.enable_capture(..., aggregate => ARRAY['schema.child.column'])), with the child rows nested."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.db.capture_support import HIJACKERS, outbox, register_dispatcher, run_and_roll_back
from tests.support.plans import explained, plan_of, tuplestore_scan_loops

pytestmark = pytest.mark.db

SHOP = """
CREATE SCHEMA shop;
CREATE TABLE shop.orders (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status text    NOT NULL DEFAULT 'open',
    total  numeric NOT NULL DEFAULT 0,
    note   text
);
CREATE TABLE shop.order_lines (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint  NOT NULL REFERENCES shop.orders (id) ON DELETE CASCADE,
    sku      text    NOT NULL,
    qty      integer NOT NULL
);
CREATE INDEX ON shop.order_lines (order_id);
CREATE TABLE shop.items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text NOT NULL);
"""


@pytest.fixture
def shop(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """shop.orders captured as the aggregate `order` with its shop.order_lines; shop.items per row."""
    conn.execute(SHOP)
    enabled = conn.execute(
        "SELECT whk.enable_capture('shop.orders', 'order', aggregate => ARRAY['shop.order_lines.order_id'])"
    ).fetchone()
    assert enabled == (True,)
    conn.execute("SELECT whk.enable_capture('shop.items', 'item')")
    return conn


def new_order(conn: psycopg.Connection[Any], lines: int = 0) -> int:
    """An order and its lines, written in one transaction (a savepoint inside the caller's)."""
    with conn.transaction():
        row = conn.execute("INSERT INTO shop.orders (total) VALUES (10) RETURNING id").fetchone()
        assert row is not None
        if lines:
            conn.execute(
                "INSERT INTO shop.order_lines (order_id, sku, qty)"
                " SELECT %s, 'S' || i, i FROM generate_series(1, %s) i",
                (row[0], lines),
            )
    return int(row[0])


def staged(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM whk.capture_aggregate_pending").fetchone()
    return int(row[0]) if row else -1


def test_an_order_with_twenty_lines_is_one_event_with_the_lines_nested(shop: psycopg.Connection[Any]) -> None:
    with shop.transaction():
        order_id = new_order(shop)
        for i in range(20):  # one statement per line, as many ERPs write them
            shop.execute(
                "INSERT INTO shop.order_lines (order_id, sku, qty) VALUES (%s, %s, %s)",
                (order_id, f"L{i}", i + 1),
            )
        assert outbox(shop) == []  # nothing before commit: the event is written at commit
    [event] = outbox(shop)
    assert event["event_type"] == "order.created"
    assert event["operation"] == "INSERT"
    assert event["event_key"] == str(order_id)
    assert event["source_table"] == "shop.orders"
    data = event["payload"]["data"]
    assert data["op"] == "INSERT" and data["table"] == "shop.orders"
    assert data["old"] is None and data["changed"] is None
    assert data["new"]["id"] == order_id and data["new"]["status"] == "open"
    lines = data["new"]["order_lines"]
    assert [line["sku"] for line in lines] == [f"L{i}" for i in range(20)]
    assert all(line["order_id"] == order_id for line in lines)
    assert staged(shop) == 0


def test_five_updates_in_one_transaction_are_one_event_with_the_final_state(
    shop: psycopg.Connection[Any],
) -> None:
    order_id = new_order(shop, lines=2)
    shop.execute("TRUNCATE whk.outbox")
    with shop.transaction():
        for status in ("paid", "packed", "shipped", "delivered", "closed"):
            shop.execute("UPDATE shop.orders SET status = %s WHERE id = %s", (status, order_id))
    [event] = outbox(shop)
    assert event["event_type"] == "order.updated"
    data = event["payload"]["data"]
    assert data["old"]["status"] == "open"  # as before the transaction
    assert data["new"]["status"] == "closed"  # as at commit
    assert data["changed"] == ["status"]
    assert len(data["new"]["order_lines"]) == 2


def test_a_rolled_back_transaction_emits_nothing_and_leaves_nothing_staged(
    shop: psycopg.Connection[Any],
) -> None:
    order_id = new_order(shop, lines=1)
    shop.execute("TRUNCATE whk.outbox")
    run_and_roll_back(
        shop,
        "INSERT INTO shop.orders (total) VALUES (5)",
        f"UPDATE shop.orders SET status = 'paid' WHERE id = {order_id}",
        f"INSERT INTO shop.order_lines (order_id, sku, qty) VALUES ({order_id}, 'X', 1)",
    )
    assert outbox(shop) == []
    assert staged(shop) == 0
    # A rolled-back savepoint takes its part back; the rest of the transaction still emits.
    with shop.transaction():
        shop.execute("UPDATE shop.orders SET note = 'kept' WHERE id = %s", (order_id,))
        run_and_roll_back(shop, f"UPDATE shop.orders SET status = 'paid' WHERE id = {order_id}")
    [event] = outbox(shop)
    assert event["payload"]["data"]["changed"] == ["note"]
    assert event["payload"]["data"]["new"]["status"] == "open"


def test_two_orders_in_one_transaction_are_two_events(shop: psycopg.Connection[Any]) -> None:
    with shop.transaction():
        first = new_order(shop, lines=3)
        second = new_order(shop, lines=2)
    events = outbox(shop)
    assert sorted(
        (e["event_key"], len(e["payload"]["data"]["new"]["order_lines"])) for e in events
    ) == sorted([(str(first), 3), (str(second), 2)])
    assert {e["event_type"] for e in events} == {"order.created"}
    assert len({e["txid"] for e in events}) == 1


def test_a_transaction_that_only_touches_lines_is_an_update_of_the_order(
    shop: psycopg.Connection[Any],
) -> None:
    order_id = new_order(shop, lines=3)
    shop.execute("TRUNCATE whk.outbox")
    with shop.transaction():
        shop.execute(
            "UPDATE shop.order_lines SET qty = qty * 10 WHERE order_id = %s AND sku = 'S1'", (order_id,)
        )
        shop.execute("DELETE FROM shop.order_lines WHERE order_id = %s AND sku = 'S3'", (order_id,))
    [event] = outbox(shop)
    assert event["event_type"] == "order.updated"
    data = event["payload"]["data"]
    # The order did not change: old is the order as it is, changed names the child collection.
    assert data["changed"] == ["order_lines"]
    assert data["old"] == {k: v for k, v in data["new"].items() if k != "order_lines"}
    assert [(line["sku"], line["qty"]) for line in data["new"]["order_lines"]] == [("S1", 10), ("S2", 2)]


def test_a_line_moved_to_another_order_updates_both(shop: psycopg.Connection[Any]) -> None:
    a, b = new_order(shop, lines=2), new_order(shop)
    shop.execute("TRUNCATE whk.outbox")
    shop.execute("UPDATE shop.order_lines SET order_id = %s WHERE order_id = %s AND sku = 'S1'", (b, a))
    events = {e["event_key"]: e["payload"]["data"] for e in outbox(shop)}
    assert set(events) == {str(a), str(b)}
    assert [line["sku"] for line in events[str(a)]["new"]["order_lines"]] == ["S2"]
    assert [line["sku"] for line in events[str(b)]["new"]["order_lines"]] == ["S1"]


def test_deleting_the_order_is_one_deleted_event_with_the_order_as_it_was(
    shop: psycopg.Connection[Any],
) -> None:
    order_id = new_order(shop, lines=3)
    shop.execute("TRUNCATE whk.outbox")
    with shop.transaction():
        shop.execute("UPDATE shop.orders SET status = 'cancelled' WHERE id = %s", (order_id,))
        shop.execute("DELETE FROM shop.orders WHERE id = %s", (order_id,))  # the lines go by cascade
    [event] = outbox(shop)
    assert event["event_type"] == "order.deleted"
    assert event["operation"] == "DELETE"
    data = event["payload"]["data"]
    assert data["new"] is None and data["changed"] is None
    assert data["old"]["id"] == order_id and data["old"]["status"] == "open"  # before the transaction


def test_an_order_created_and_deleted_in_one_transaction_emits_nothing(shop: psycopg.Connection[Any]) -> None:
    with shop.transaction():
        order_id = new_order(shop, lines=2)
        shop.execute("DELETE FROM shop.orders WHERE id = %s", (order_id,))
    assert outbox(shop) == []
    assert staged(shop) == 0


def test_writes_that_end_where_they_began_emit_nothing(shop: psycopg.Connection[Any]) -> None:
    order_id = new_order(shop)
    shop.execute("TRUNCATE whk.outbox")
    with shop.transaction():
        shop.execute("UPDATE shop.orders SET status = 'paid' WHERE id = %s", (order_id,))
        shop.execute("UPDATE shop.orders SET status = 'open' WHERE id = %s", (order_id,))
    assert outbox(shop) == []


def test_per_row_capture_of_other_tables_is_unaffected(shop: psycopg.Connection[Any]) -> None:
    with shop.transaction():
        shop.execute("INSERT INTO shop.items (sku) SELECT 'I' || i FROM generate_series(1, 3) AS i")
        new_order(shop, lines=2)
        shop.execute("UPDATE shop.items SET sku = sku || '!'")
    events = outbox(shop)
    # Per-row events are written by each statement, in the transaction; the aggregate's at commit, last.
    assert [e["event_type"] for e in events] == ["item.created"] * 3 + ["item.updated"] * 3 + [
        "order.created"
    ]
    # The per-row table still runs its generated per-operation functions, not the aggregate's staging.
    triggers = shop.execute(
        "SELECT tgname::text, tgfoid::regproc::text FROM pg_trigger"
        " WHERE tgrelid = 'shop.items'::regclass ORDER BY tgname"
    ).fetchall()
    assert triggers == [
        ("whk_capture_delete", "whk.capture_shop_items_del"),
        ("whk_capture_insert", "whk.capture_shop_items_ins"),
        ("whk_capture_update", "whk.capture_shop_items_upd"),
    ]
    row = shop.execute(
        "SELECT active, aggregate FROM whk.captured_tables WHERE tbl = 'shop.items'::regclass"
    ).fetchone()
    assert row == (True, None)


def test_listed_operations_and_columns_filter_the_aggregate_event(shop: psycopg.Connection[Any]) -> None:
    assert shop.execute(
        "SELECT whk.enable_capture('shop.orders', 'order', columns => ARRAY['status'],"
        " operations => ARRAY['UPDATE'], aggregate => ARRAY['shop.order_lines.order_id'])"
    ).fetchone() == (True,)
    order_id = new_order(shop, lines=1)  # order.created is not captured
    shop.execute("UPDATE shop.orders SET note = 'not listened' WHERE id = %s", (order_id,))
    assert outbox(shop) == []
    shop.execute("UPDATE shop.order_lines SET qty = 7 WHERE order_id = %s", (order_id,))  # lines always count
    shop.execute("UPDATE shop.orders SET status = 'paid', note = 'x' WHERE id = %s", (order_id,))
    assert [e["payload"]["data"]["changed"] for e in outbox(shop)] == [["order_lines"], ["status"]]
    shop.execute("DELETE FROM shop.orders WHERE id = %s", (order_id,))
    assert len(outbox(shop)) == 2  # order.deleted is not captured either
    assert shop.execute("SELECT active FROM whk.captured_tables WHERE event_prefix = 'order'").fetchone() == (
        True,
    )


def test_enable_is_idempotent_and_disable_removes_every_trigger(shop: psycopg.Connection[Any]) -> None:
    again = shop.execute(
        "SELECT whk.enable_capture('shop.orders', 'order', aggregate => ARRAY['shop.order_lines.order_id'])"
    ).fetchone()
    assert again == (False,)
    assert shop.execute(
        "SELECT aggregate FROM whk.captured_tables WHERE event_prefix = 'order'"
    ).fetchone() == (["shop.order_lines.order_id"],)
    assert shop.execute("SELECT whk.disable_capture('shop.orders')").fetchone() == (True,)
    left = shop.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid IN"
        " ('shop.orders'::regclass, 'shop.order_lines'::regclass, 'whk.capture_aggregate_pending'::regclass)"
        " AND NOT tgisinternal"
    ).fetchone()
    assert left == (0,)
    functions = shop.execute(
        "SELECT count(*) FROM pg_proc"
        " WHERE pronamespace = 'whk'::regnamespace AND proname LIKE 'capture\\_shop\\_orders%'"
    ).fetchone()
    assert functions == (0,)
    new_order(shop, lines=2)
    assert outbox(shop) == []


def test_a_child_removed_from_the_aggregate_stops_staging(shop: psycopg.Connection[Any]) -> None:
    shop.execute(
        "CREATE TABLE shop.payments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " order_id bigint REFERENCES shop.orders (id), amount numeric)"
    )
    both = "ARRAY['shop.order_lines.order_id', 'shop.payments.order_id']"
    shop.execute(f"SELECT whk.enable_capture('shop.orders', 'order', aggregate => {both})")
    with shop.transaction():
        order_id = new_order(shop, lines=1)
        shop.execute("INSERT INTO shop.payments (order_id, amount) VALUES (%s, 10)", (order_id,))
    [created] = outbox(shop)
    assert [p["amount"] for p in created["payload"]["data"]["new"]["payments"]] == [10]
    assert len(created["payload"]["data"]["new"]["order_lines"]) == 1

    # order_lines leaves (payments, listed second, becomes the first child): its staging goes with it.
    shop.execute(
        "SELECT whk.enable_capture('shop.orders', 'order', aggregate => ARRAY['shop.payments.order_id'])"
    )
    shop.execute("TRUNCATE whk.outbox")
    shop.execute("INSERT INTO shop.order_lines (order_id, sku, qty) VALUES (%s, 'late', 1)", (order_id,))
    assert outbox(shop) == []
    shop.execute("INSERT INTO shop.payments (order_id, amount) VALUES (%s, 5)", (order_id,))
    [updated] = outbox(shop)
    assert updated["payload"]["data"]["changed"] == ["payments"]
    assert "order_lines" not in updated["payload"]["data"]["new"]
    staging = shop.execute(
        "SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc"
        " WHERE pronamespace = 'whk'::regnamespace AND proname ~ '^capture_shop_orders_[0-9]'"
    ).fetchone()
    assert staging == (["capture_shop_orders_1d", "capture_shop_orders_1i", "capture_shop_orders_1u"],)
    assert shop.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shop.order_lines'::regclass AND NOT tgisinternal"
    ).fetchone() == (0,)


def test_back_to_per_row_capture_drops_the_aggregate(shop: psycopg.Connection[Any]) -> None:
    with shop.transaction():  # staged, then the settings change in the same transaction: nothing stays behind
        new_order(shop, lines=1)
        shop.execute("SELECT whk.enable_capture('shop.orders', 'order')")
    assert staged(shop) == 0
    shop.execute("TRUNCATE whk.outbox")
    with shop.transaction():
        order_id = new_order(shop, lines=2)
        shop.execute("UPDATE shop.orders SET status = 'paid' WHERE id = %s", (order_id,))
    assert [e["event_type"] for e in outbox(shop)] == ["order.created", "order.updated"]
    assert shop.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shop.order_lines'::regclass AND NOT tgisinternal"
    ).fetchone() == (0,)
    assert shop.execute("SELECT to_regproc('whk.capture_shop_orders_agg')").fetchone() == (None,)


def test_an_empty_aggregate_coalesces_the_roots_own_writes(shop: psycopg.Connection[Any]) -> None:
    shop.execute("SELECT whk.enable_capture('shop.items', 'item', aggregate => '{}')")
    with shop.transaction():
        shop.execute("INSERT INTO shop.items (sku) VALUES ('A')")
        shop.execute("UPDATE shop.items SET sku = 'B'")
        shop.execute("UPDATE shop.items SET sku = 'C'")
    [event] = outbox(shop)
    assert event["event_type"] == "item.created"
    assert event["payload"]["data"]["new"]["sku"] == "C"


def test_an_erp_role_without_any_grant_on_whk_writes_aggregates(shop: psycopg.Connection[Any]) -> None:
    role = f"erp_app_{uuid.uuid4().hex[:8]}"
    shop.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        shop.execute(f"GRANT USAGE ON SCHEMA shop TO {role}")
        shop.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON shop.orders, shop.order_lines TO {role}")
        with shop.transaction():
            shop.execute(f"SET LOCAL ROLE {role}")
            order_id = new_order(shop, lines=2)
            shop.execute("UPDATE shop.order_lines SET qty = 5")
            shop.execute("DELETE FROM shop.orders WHERE id <> %s", (order_id,))
    finally:
        shop.execute(f"DROP OWNED BY {role}")
        shop.execute(f"DROP ROLE {role}")
    [event] = outbox(shop)
    assert event["event_type"] == "order.created"
    assert [line["qty"] for line in event["payload"]["data"]["new"]["order_lines"]] == [5, 5]


# Shadows of every function and operator the staging triggers use (capture_support.HIJACKERS: the wake-up's).
STAGING_HIJACKERS = (
    HIJACKERS
    + """
CREATE FUNCTION evil.to_jsonb(shop.orders) RETURNS jsonb LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.to_jsonb(shop.order_lines) RETURNS jsonb LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.pg_current_xact_id() RETURNS xid8 LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.jt(jsonb, text) RETURNS text LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = evil.jt);
CREATE FUNCTION evil.tt(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.tt);
CREATE FUNCTION evil.aa(text[], text[]) RETURNS text[] LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.|| (LEFTARG = text[], RIGHTARG = text[], FUNCTION = evil.aa);
CREATE FUNCTION evil.ac(text[], text[]) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.@> (LEFTARG = text[], RIGHTARG = text[], FUNCTION = evil.ac);
"""
)


def test_the_callers_search_path_cannot_redirect_a_name_in_the_staging(shop: psycopg.Connection[Any]) -> None:
    """The staging triggers run as the whk owner with no SET clause: every name in them is qualified."""
    shop.execute(STAGING_HIJACKERS)
    register_dispatcher(shop, idle=True)
    order_id = new_order(shop, lines=1)
    other = new_order(shop, lines=1)
    shop.execute("TRUNCATE whk.outbox")
    with shop.transaction():
        shop.execute("SET LOCAL search_path = evil, public, pg_catalog")
        with pytest.raises(psycopg.errors.RaiseException, match="hijacked"), shop.transaction():
            shop.execute("SELECT ARRAY['a'] || ARRAY['b']")  # the trap is real
        shop.execute(f"UPDATE shop.orders SET status = 'paid' WHERE id OPERATOR(pg_catalog.=) {order_id}")
        shop.execute(f"INSERT INTO shop.order_lines (order_id, sku, qty) VALUES ({order_id}, 'Z', 1)")
        shop.execute("DELETE FROM shop.order_lines WHERE sku OPERATOR(pg_catalog.=) 'S1'")
        shop.execute(f"DELETE FROM shop.orders WHERE id OPERATOR(pg_catalog.=) {other}")
    updated, deleted = sorted(outbox(shop), key=lambda e: e["event_type"], reverse=True)
    assert updated["payload"]["data"]["changed"] == ["order_lines", "status"]
    assert (deleted["event_type"], deleted["event_key"]) == ("order.deleted", str(other))


@pytest.mark.parametrize(
    ("aggregate", "error", "hint"),
    [
        ("ARRAY['shop.order_lines.nope']", psycopg.errors.UndefinedColumn, "holds the key of shop.orders"),
        ("ARRAY['shop.nope.order_id']", psycopg.errors.UndefinedTable, "schema.table.column"),
        ("ARRAY['order_lines.order_id']", psycopg.errors.InvalidParameterValue, "erp.order_lines.order_id"),
        ("ARRAY['shop.order_lines.sku']", psycopg.errors.DatatypeMismatch, "the same type"),
        (
            "ARRAY['shop.lines_numeric.order_id']",
            psycopg.errors.DatatypeMismatch,
            "integer for an integer key",
        ),
        ("ARRAY['shop.orders.id']", psycopg.errors.WrongObjectType, "other than the root"),
        (
            "ARRAY['shop.order_lines.order_id', 'shop.order_lines.order_id']",
            psycopg.errors.DuplicateObject,
            "one column",
        ),
        ("ARRAY['whk.outbox.id']", psycopg.errors.WrongObjectType, "not a table of schema whk"),
    ],
)
def test_bad_aggregate_input_raises_with_a_hint(
    conn: psycopg.Connection[Any], aggregate: str, error: type[Exception], hint: str
) -> None:
    conn.execute(SHOP)
    # numeric = bigint compares, but a line with order_id 1.5 would fail the commit: refused.
    conn.execute("CREATE TABLE shop.lines_numeric (id bigint PRIMARY KEY, order_id numeric)")
    with pytest.raises(error) as info:
        conn.execute(f"SELECT whk.enable_capture('shop.orders', 'order', aggregate => {aggregate})")
    diag = info.value.diag  # type: ignore[attr-defined]
    assert diag.message_hint is not None and hint in diag.message_hint
    assert conn.execute("SELECT count(*) FROM whk.capture_config").fetchone() == (0,)


def test_bad_aggregate_settings_raise_with_a_hint(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SHOP)
    conn.execute("CREATE TABLE shop.notes (order_id bigint, body text)")  # no key
    conn.execute("CREATE TABLE shop.order_lines_x (id bigint PRIMARY KEY, order_lines text)")
    cases = [
        ("'shop.notes', 'note', aggregate => '{}'", psycopg.errors.InvalidParameterValue, "key_column"),
        (
            "'shop.orders', 'order', key_column => 'status', aggregate => '{}'",
            psycopg.errors.InvalidParameterValue,
            "unique",
        ),
        (
            "'shop.orders', 'order', condition => 'new.total > 0', aggregate => '{}'",
            psycopg.errors.InvalidParameterValue,
            "columns =>",
        ),
        (
            "'shop.order_lines_x', 'x', aggregate => ARRAY['shop.order_lines.order_id']",
            psycopg.errors.DuplicateColumn,
            "must not be a column of the root",
        ),
    ]
    for args, error, hint in cases:
        with pytest.raises(error) as info:
            conn.execute(f"SELECT whk.enable_capture({args})")
        diag = info.value.diag  # type: ignore[attr-defined]
        assert diag.message_hint is not None and hint in diag.message_hint, args
    conn.execute(
        "SELECT whk.enable_capture('shop.orders', 'order', aggregate => ARRAY['shop.order_lines.order_id'])"
    )
    conn.execute("CREATE TABLE shop.orders2 (id bigint PRIMARY KEY)")
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        conn.execute(
            "SELECT whk.enable_capture('shop.orders2', 'order2',"
            " aggregate => ARRAY['shop.order_lines.order_id'])"
        )
    assert "one aggregate" in (info.value.diag.message_hint or "")


def test_a_child_captured_per_row_too_and_keyed_by_a_narrower_type(conn: psycopg.Connection[Any]) -> None:
    """A child's key column may be another integer type than the root's key (keys compare as text), and the
    child may also be captured per row on its own: both kinds of event are written."""
    conn.execute(SHOP)
    conn.execute(
        "CREATE TABLE shop.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " order_id integer, body text)"
    )
    conn.execute(
        "SELECT whk.enable_capture('shop.orders', 'order', aggregate => ARRAY['shop.notes.order_id'])"
    )
    conn.execute("SELECT whk.enable_capture('shop.notes', 'note')")
    with conn.transaction():
        order_id = new_order(conn)
        conn.execute(
            "INSERT INTO shop.notes (order_id, body) VALUES (%s, 'a'), (%s, 'b')", (order_id, order_id)
        )
    events = outbox(conn)
    assert [e["event_type"] for e in events] == ["note.created", "note.created", "order.created"]
    assert [n["body"] for n in events[-1]["payload"]["data"]["new"]["notes"]] == ["a", "b"]


def test_a_new_major_of_the_event_type_is_stamped_without_touching_any_trigger(
    shop: psycopg.Connection[Any],
) -> None:
    """register_event_type(new_major) regenerates the flush with the new major; the triggers (on the ERP
    tables, and the flush's on the shared staging table, whose drop would lock every aggregate) stay."""
    triggers = (
        "SELECT array_agg(oid ORDER BY oid) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN"
        " ('shop.orders'::regclass, 'shop.order_lines'::regclass, 'whk.capture_aggregate_pending'::regclass)"
    )
    before = shop.execute(triggers).fetchone()
    assert before is not None and len(before[0]) == 7
    shop.execute(
        'SELECT whk.register_event_type(\'order.created\', \'{"type": "object", "required": ["op"]}\','
        " new_major => true)"
    )
    assert shop.execute(triggers).fetchone() == before
    new_order(shop, lines=1)
    [event] = outbox(shop)
    assert (event["event_type"], event["event_version"]) == ("order.created", 2)


def test_a_new_prefix_moves_the_flush_to_it(shop: psycopg.Connection[Any]) -> None:
    shop.execute(
        "SELECT whk.enable_capture('shop.orders', 'sale', aggregate => ARRAY['shop.order_lines.order_id'])"
    )
    new_order(shop, lines=2)
    [event] = outbox(shop)
    assert event["event_type"] == "sale.created"
    assert len(event["payload"]["data"]["new"]["order_lines"]) == 2
    assert staged(shop) == 0


def test_a_bulk_update_of_orders_after_a_one_row_update_reads_each_transition_table_once(
    shop: psycopg.Connection[Any],
) -> None:
    """PL/pgSQL caches the staging statement's plan per session, planned for the first (one-row) UPDATE. The
    root's UPDATE staging groups old and new keys instead of joining them (an anti-join read old rows twice,
    and a cached join plan could turn into a nested loop): each transition table is read exactly once."""
    shop.execute("INSERT INTO shop.orders (total) SELECT i FROM generate_series(1, 300) AS i")
    shop.execute("UPDATE shop.orders SET note = 'one' WHERE id = 1")  # the session's cached plan: 1 row
    shop.execute("TRUNCATE whk.outbox")
    rows, plans = explained(shop, "UPDATE shop.orders SET status = 'paid' RETURNING id", [])
    assert len(rows) == 300
    staging = plan_of(plans, "INSERT INTO whk.capture_aggregate_pending")
    assert tuplestore_scan_loops(staging) == ["1", "1"], staging  # old and new, each read once
    events = outbox(shop)
    assert len(events) == 300 and {e["event_type"] for e in events} == {"order.updated"}
    assert {e["payload"]["data"]["changed"][0] for e in events} == {"status"}


def test_explain_shows_the_one_aggregate_event_a_statement_would_emit(shop: psycopg.Connection[Any]) -> None:
    """whk.explain fires deferred triggers inside its rolled-back savepoint: the commit-time aggregate
    event is shown (one event for the order, its lines nested), and nothing stays staged or written."""
    order_id = new_order(shop, lines=3)
    before = len(outbox(shop))
    rows = shop.execute(
        "SELECT DISTINCT event_type, event_key FROM whk.explain(%s)",
        [f"UPDATE shop.order_lines SET qty = qty + 1 WHERE order_id = {order_id}"],
    ).fetchall()
    assert rows == [("order.updated", str(order_id))]
    assert len(outbox(shop)) == before
    assert staged(shop) == 0
