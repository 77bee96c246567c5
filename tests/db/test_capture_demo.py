"""Demo ERP (sql/demo/erp.sql): each of the spec's 18 event types comes from the ERP action that means it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.db.capture_support import install_demo, outbox
from tests.support.plans import explained, plan_of, tuplestore_scan_loops

pytestmark = pytest.mark.db


@pytest.fixture
def erp(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    install_demo(conn)
    conn.execute("INSERT INTO erp.users (email, name) VALUES ('ana@example.com', 'Ana')")
    conn.execute("INSERT INTO erp.products (sku, name, price, stock) VALUES ('W-1', 'Widget', 9.90, 3)")
    conn.execute("INSERT INTO erp.orders (user_id, total) VALUES (1, 29.70)")
    conn.execute("TRUNCATE whk.outbox")
    return conn


def events_of(conn: psycopg.Connection[Any], action: str, *params: Any) -> list[str]:
    """Run one ERP action (its own transaction) and return the types it emitted, in order."""
    before = conn.execute("SELECT coalesce(max(id), 0) FROM whk.outbox").fetchone()
    assert before is not None
    conn.execute(action, params or None)
    return [e["event_type"] for e in outbox(conn, f"id > {int(before[0])}")]


def test_every_seed_type_comes_from_its_erp_action(erp: psycopg.Connection[Any]) -> None:
    c = erp
    seen: dict[str, list[str]] = {
        "user.created": events_of(c, "INSERT INTO erp.users (email, name) VALUES ('bo@example.com', 'Bo')"),
        "user.updated": events_of(c, "UPDATE erp.users SET name = 'Ana Maria' WHERE id = 1"),
        "user.login": events_of(c, "SELECT erp.login(1, '203.0.113.9', 'firefox')"),
        "user.logout": events_of(c, "SELECT erp.logout(1)"),
        "order.created": events_of(c, "INSERT INTO erp.orders (user_id, total) VALUES (1, 10)"),
        "order.updated": events_of(c, "UPDATE erp.orders SET status = 'paid' WHERE id = 1"),
        "order.shipped": events_of(c, "UPDATE erp.orders SET status = 'shipped' WHERE id = 1"),
        "order.completed": events_of(c, "UPDATE erp.orders SET status = 'completed' WHERE id = 1"),
        "order.cancelled": events_of(c, "UPDATE erp.orders SET status = 'cancelled' WHERE id = 2"),
        "product.created": events_of(
            c, "INSERT INTO erp.products (sku, name, price, stock) VALUES ('G', 'G', 1, 0)"
        ),
        "product.updated": events_of(c, "UPDATE erp.products SET price = 8.90 WHERE sku = 'W-1'"),
        "product.out_of_stock": events_of(c, "UPDATE erp.products SET stock = stock - 3 WHERE sku = 'W-1'"),
        "product.deleted": events_of(c, "DELETE FROM erp.products WHERE sku = 'G'"),
        "user.deleted": events_of(c, "DELETE FROM erp.users WHERE email = 'bo@example.com'"),
        "system.startup": events_of(
            c, "SELECT whk.emit_system('startup', 'dispatcher', '{\"version\": \"0.1.0\"}')"
        ),
        "system.health_check": events_of(c, "SELECT whk.emit_system('health_check')"),
        "system.backup_completed": events_of(
            c, "SELECT whk.emit_system('backup_completed', 'pg_basebackup')"
        ),
        "system.shutdown": events_of(c, "SELECT whk.emit_system('shutdown', 'dispatcher')"),
    }
    expected_extra = {"product.out_of_stock": ["product.updated", "product.out_of_stock"]}
    for event_type, emitted in seen.items():
        assert emitted == expected_extra.get(event_type, [event_type]), event_type
    catalog = {
        r[0] for r in c.execute("SELECT name FROM whk.whk_02_eventos WHERE metadata ->> 'seed' = 'true'")
    }
    assert set(seen) == catalog
    # The demo emits nothing outside the spec's catalog, and every payload matches its type's schema.
    verdicts = c.execute(
        "SELECT o.event_type, e.metadata ->> 'seed',"
        " whk.validate_payload(o.event_type, o.event_version, o.payload)"
        " FROM whk.outbox_events o LEFT JOIN whk.whk_02_eventos e ON e.name = o.event_type"
    ).fetchall()
    assert verdicts and all(seed == "true" and error is None for _, seed, error in verdicts), verdicts


def test_status_transitions_replace_order_updated(erp: psycopg.Connection[Any]) -> None:
    assert events_of(erp, "UPDATE erp.orders SET status = 'shipped', total = 30") == ["order.shipped"]
    assert events_of(erp, "UPDATE erp.orders SET total = 31") == ["order.updated"]
    assert events_of(erp, "UPDATE erp.orders SET status = 'shipped'") == []  # no change, no event
    [shipped] = outbox(erp, "event_type = 'order.shipped'")
    data = shipped["payload"]["data"]
    assert data["op"] == "UPDATE" and data["table"] == "erp.orders"
    assert data["old"]["status"] == "pending" and data["new"]["status"] == "shipped"
    assert data["changed"] == ["status", "total"]
    assert shipped["event_key"] == "1"
    assert events_of(erp, "DELETE FROM erp.orders") == []  # orders are cancelled, not deleted


def test_a_large_status_update_after_a_one_row_update_reads_each_transition_table_once(
    erp: psycopg.Connection[Any],
) -> None:
    """The old/new join of the status binding must not reuse a one-row nested-loop plan (docs/capture.md)."""
    erp.execute("INSERT INTO erp.orders (user_id, total) SELECT 1, g FROM generate_series(1, 200) AS g")
    erp.execute("UPDATE erp.orders SET status = 'shipped' WHERE id = 1")  # the session's cached plan: 1 row
    rows, plans = explained(erp, "UPDATE erp.orders SET status = 'completed' RETURNING id", [])
    assert len(rows) == 201
    binding = plan_of(plans, "'order.' || n.status")
    assert tuplestore_scan_loops(binding) == ["1", "1"], binding
    assert len(outbox(erp, "event_type = 'order.completed'")) == 201


def test_stock_crossing_to_zero_only(erp: psycopg.Connection[Any]) -> None:
    assert events_of(erp, "UPDATE erp.products SET stock = 1") == ["product.updated"]
    assert events_of(erp, "UPDATE erp.products SET stock = 0") == ["product.updated", "product.out_of_stock"]
    assert events_of(erp, "UPDATE erp.products SET stock = -2") == ["product.updated"]  # already out
    [event] = outbox(erp, "event_type = 'product.out_of_stock'")
    assert event["payload"]["data"] == {
        "product_id": 1, "sku": "W-1", "name": "Widget", "stock": 0, "previous_stock": 1,
    }  # fmt: skip


def test_sessions_give_login_and_logout(erp: psycopg.Connection[Any]) -> None:
    session = erp.execute("SELECT erp.login(1, '198.51.100.7', 'curl/8')").fetchone()
    assert session == (1,)
    assert events_of(erp, "SELECT erp.logout(1)") == ["user.logout"]
    assert events_of(erp, "SELECT erp.logout(1)") == []  # already ended
    erp.execute("SELECT erp.login(1)")
    # Deleting the user closes its open session (ON DELETE CASCADE): a logout besides the user.deleted.
    erp.execute("DELETE FROM erp.orders")
    assert sorted(events_of(erp, "DELETE FROM erp.users WHERE id = 1")) == ["user.deleted", "user.logout"]
    login, logout = (
        e["payload"]["data"] for e in outbox(erp, "event_type IN ('user.login', 'user.logout')")[:2]
    )
    assert login["user_id"] == 1 and login["ip"] == "198.51.100.7" and login["user_agent"] == "curl/8"
    assert logout["reason"] == "logout" and logout["duration_s"] >= 0


def test_users_listen_only_to_meaningful_columns(erp: psycopg.Connection[Any]) -> None:
    assert events_of(erp, "UPDATE erp.users SET updated_at = now() + interval '1 minute'") == []
    assert events_of(erp, "UPDATE erp.users SET active = false") == ["user.updated"]


def test_the_demo_installs_idempotently_and_needs_no_whk_grant(erp: psycopg.Connection[Any]) -> None:
    install_demo(erp)  # second install: no error, no duplicate capture
    assert erp.execute("SELECT count(*), bool_and(active) FROM whk.captured_tables").fetchone() == (3, True)
    role = "erp_demo_app"
    erp.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        erp.execute(f"GRANT USAGE ON SCHEMA erp TO {role}")
        erp.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA erp TO {role}")
        with erp.transaction():
            erp.execute(f"SET LOCAL ROLE {role}")
            erp.execute("UPDATE erp.orders SET status = 'cancelled'")
            erp.execute("INSERT INTO erp.user_sessions (user_id) VALUES (1)")
    finally:
        erp.execute(f"DROP OWNED BY {role}")
        erp.execute(f"DROP ROLE {role}")
    assert [e["event_type"] for e in outbox(erp)] == ["order.cancelled", "user.login"]
