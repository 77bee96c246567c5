"""Capture triggers: ERP commits become outbox events in the same transaction (whk.enable_capture)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest

from tests.db import capture_support
from tests.db.capture_support import Notifications, outbox, register_dispatcher, run_and_roll_back
from tests.support.plans import explained, plan_of, tuplestore_scan_loops

pytestmark = pytest.mark.db

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@pytest.fixture
def items(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """An ERP table `shop.items` captured as item.*."""
    conn.execute("CREATE SCHEMA shop")
    conn.execute(
        "CREATE TABLE shop.items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text NOT NULL,"
        " qty integer NOT NULL DEFAULT 0, note text, touched_at timestamptz)"
    )
    assert conn.execute("SELECT whk.enable_capture('shop.items', 'item')").fetchone() == (True,)
    return conn


def test_rollback_writes_nothing_and_commit_writes_the_event(items: psycopg.Connection[Any]) -> None:
    run_and_roll_back(items, "INSERT INTO shop.items (sku, qty) VALUES ('A-1', 5)")
    assert outbox(items) == []

    with items.transaction():
        items.execute("INSERT INTO shop.items (sku, qty) VALUES ('A-2', 7)")
        txid = items.execute("SELECT pg_current_xact_id()::text").fetchone()
    [event] = outbox(items)
    assert event["event_type"] == "item.created"
    assert event["event_version"] == 1
    assert event["event_key"] == str(event["payload"]["data"]["new"]["id"])
    assert event["source_table"] == "shop.items"
    assert event["operation"] == "INSERT"
    assert event["status"] == "pending"
    assert txid is not None and event["txid"] == txid[0]
    assert isinstance(event["event_id"], uuid.UUID)
    envelope = event["payload"]
    assert set(envelope) == {"type", "timestamp", "data"}
    assert envelope["type"] == "item.created"
    assert ISO_UTC.match(envelope["timestamp"])
    assert envelope["data"]["op"] == "INSERT"
    assert envelope["data"]["table"] == "shop.items"
    assert envelope["data"]["old"] is None and envelope["data"]["changed"] is None
    assert envelope["data"]["new"]["sku"] == "A-2" and envelope["data"]["new"]["qty"] == 7


def test_update_and_delete_events_carry_old_new_and_changed(items: psycopg.Connection[Any]) -> None:
    items.execute("INSERT INTO shop.items (sku, qty) VALUES ('A', 1)")
    items.execute("UPDATE shop.items SET qty = 2, note = 'restocked'")
    items.execute("DELETE FROM shop.items")
    created, updated, deleted = outbox(items)
    assert [e["event_type"] for e in (created, updated, deleted)] == [
        "item.created",
        "item.updated",
        "item.deleted",
    ]
    data = updated["payload"]["data"]
    assert data["op"] == "UPDATE"
    assert data["old"]["qty"] == 1 and data["new"]["qty"] == 2
    assert data["changed"] == ["note", "qty"]
    gone = deleted["payload"]["data"]
    assert gone["new"] is None and gone["old"]["sku"] == "A" and gone["changed"] is None
    assert deleted["event_key"] == created["event_key"]


def test_noop_update_emits_nothing(items: psycopg.Connection[Any]) -> None:
    items.execute("INSERT INTO shop.items (sku, qty) SELECT 'S' || i, i FROM generate_series(1, 10) AS i")
    before = len(outbox(items))
    items.execute("UPDATE shop.items SET qty = qty, sku = sku")
    items.execute("UPDATE shop.items SET qty = 1 WHERE false")
    assert len(outbox(items)) == before


@pytest.mark.slow  # captures a 50,000-row UPDATE
def test_fifty_thousand_row_update_is_one_statement_and_at_most_one_wakeup(
    items: psycopg.Connection[Any], db_url: str
) -> None:
    items.execute("INSERT INTO shop.items (sku, qty) SELECT 'S' || i, i FROM generate_series(1, 50000) AS i")
    items.execute("TRUNCATE whk.outbox")
    register_dispatcher(items, idle=True)
    listener = Notifications(db_url)
    try:
        with items.transaction():
            items.execute("SET LOCAL track_functions = 'pl'")
            items.execute("UPDATE shop.items SET qty = qty + 1")
            # The capture function ran once for the statement: one INSERT ... SELECT, not 50,000 calls.
            calls = items.execute(
                "SELECT calls FROM pg_stat_xact_user_functions WHERE funcname = 'capture_shop_items_upd'"
            ).fetchone()
        wakeups = listener.drain()
    finally:
        listener.close()
    counts = items.execute(
        "SELECT count(*), count(DISTINCT txid), count(DISTINCT event_key), min(event_type), max(event_type)"
        " FROM whk.outbox"
    ).fetchone()
    assert counts == (50000, 1, 50000, "item.updated", "item.updated")
    assert len(wakeups) <= 1
    assert wakeups == [""]
    assert calls == (1,)


def test_commit_order_differs_from_id_order_and_claiming_by_status_skips_nothing(
    items: psycopg.Connection[Any], db_url: str
) -> None:
    a = psycopg.connect(db_url)
    b = psycopg.connect(db_url)
    try:
        a.execute("INSERT INTO shop.items (sku) VALUES ('from A')")  # A inserts first ...
        b.execute("INSERT INTO shop.items (sku) VALUES ('from B')")
        b.commit()  # ... B commits first
        claim = (
            "UPDATE whk.outbox o SET status = 'routed', routed_at = now(),"
            " commit_seq = nextval('whk.outbox_commit_seq')"
            " WHERE (id, created_at) IN (SELECT id, created_at FROM whk.outbox WHERE status = 'pending'"
            "                            ORDER BY id FOR UPDATE SKIP LOCKED)"
            " RETURNING o.id, whk.event_envelope(o) -> 'data' -> 'new' ->> 'sku'"
        )
        first = items.execute(claim).fetchall()
        assert [sku for _, sku in first] == ["from B"]
        watermark = max(i for i, _ in first)
        a.commit()  # A becomes visible after B although its id is smaller
        second = items.execute(claim).fetchall()
        assert [sku for _, sku in second] == ["from A"]
        assert second[0][0] < watermark  # an id-watermark poller would have skipped it
    finally:
        a.close()
        b.close()
    seq = items.execute(
        "SELECT payload -> 'data' -> 'new' ->> 'sku' FROM whk.outbox_events ORDER BY commit_seq"
    ).fetchall()
    assert seq == [("from B",), ("from A",)]


def test_edge_values_commit_and_produce_valid_json(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TYPE public.mood AS ENUM ('ok', 'meh')")
    conn.execute(
        "CREATE TABLE public.odd (id int PRIMARY KEY, n numeric, f float8, ts timestamptz, d date, b bytea,"
        " big text, j jsonb, arr int[], iv interval, ip inet, u uuid, p point, m public.mood, x xml)"
    )
    conn.execute("SELECT whk.enable_capture('public.odd', 'odd')")
    conn.execute(
        "INSERT INTO public.odd VALUES (1, 'NaN', '-Infinity', 'infinity', '-infinity', '\\x00ff10',"
        " repeat('x', 1024 * 1024), '{\"nested\": [1, null]}', '{1,NULL,3}', '1 day', '10.0.0.1',"
        " gen_random_uuid(),"
        " '(1,2)', 'meh', '<a>1</a>')"
    )
    conn.execute("INSERT INTO public.odd (id) VALUES (2)")  # every other column NULL
    conn.execute(
        "UPDATE public.odd SET p = '(3,4)', x = '<a>2</a>', n = 'NaN' WHERE id = 1"
    )  # no '=' for point/xml
    conn.execute("UPDATE public.odd SET n = 'Infinity' WHERE id = 2")
    conn.execute("DELETE FROM public.odd")
    events = outbox(conn)  # strict JSON parse of every payload
    assert [e["event_type"] for e in events] == [
        "odd.created",
        "odd.created",
        "odd.updated",
        "odd.updated",
        "odd.deleted",
        "odd.deleted",
    ]
    new = events[0]["payload"]["data"]["new"]
    assert (
        new["n"] == "NaN" and new["f"] == "-Infinity" and new["ts"] == "infinity" and new["d"] == "-infinity"
    )
    assert new["b"] == "\\x00ff10"
    assert len(new["big"]) == 1024 * 1024
    assert new["j"] == {"nested": [1, None]} and new["arr"] == [1, None, 3]
    assert events[1]["payload"]["data"]["new"]["n"] is None
    assert events[2]["payload"]["data"]["changed"] == ["p", "x"]  # NaN = NaN: not a change
    assert events[3]["payload"]["data"]["changed"] == ["n"]


def test_wide_rows_are_captured(conn: psycopg.Connection[Any]) -> None:
    cols = ", ".join(f"c{i} text" for i in range(300))
    conn.execute(f"CREATE TABLE public.wide (id int PRIMARY KEY, {cols})")
    conn.execute("SELECT whk.enable_capture('public.wide', 'wide')")
    conn.execute("INSERT INTO public.wide (id, c0, c299) VALUES (1, 'first', 'last')")
    conn.execute("UPDATE public.wide SET c150 = 'middle'")
    created, updated = outbox(conn)
    assert len(created["payload"]["data"]["new"]) == 301
    assert updated["payload"]["data"]["changed"] == ["c150"]


def test_an_erp_role_without_any_grant_on_whk_can_write_captured_tables(
    items: psycopg.Connection[Any],
) -> None:
    role = f"erp_app_{uuid.uuid4().hex[:8]}"
    items.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        items.execute(f"GRANT USAGE ON SCHEMA shop TO {role}")
        items.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON shop.items TO {role}")
        has_whk = items.execute(
            "SELECT has_schema_privilege(%s, 'whk', 'USAGE'),"
            " has_table_privilege(%s, 'whk.outbox', 'INSERT')",
            (role, role),
        ).fetchone()
        assert has_whk == (False, False)
        with items.transaction():
            items.execute(f"SET LOCAL ROLE {role}")
            items.execute("INSERT INTO shop.items (sku) VALUES ('by the ERP role')")
            items.execute("UPDATE shop.items SET qty = 3")
            items.execute("DELETE FROM shop.items")
            with pytest.raises(psycopg.errors.InsufficientPrivilege), items.transaction():
                items.execute("SELECT count(*) FROM whk.outbox")
    finally:
        items.execute(f"DROP OWNED BY {role}")
        items.execute(f"DROP ROLE {role}")
    assert [e["event_type"] for e in outbox(items)] == ["item.created", "item.updated", "item.deleted"]


def test_a_large_update_after_a_one_row_update_is_planned_for_its_size(
    items: psycopg.Connection[Any],
) -> None:
    """PL/pgSQL caches a static statement's plan per session for the transition table it first saw: the
    one-row plan paired old and new rows by a nested loop, quadratic for a large UPDATE later in the same
    session (5,000 rows took 90 s). Statements over 8 rows are planned for their own size."""
    items.execute("INSERT INTO shop.items (sku, qty) SELECT 'S' || i, i FROM generate_series(1, 300) AS i")
    items.execute("UPDATE shop.items SET qty = qty + 1 WHERE sku = 'S1'")  # the session's cached plan: 1 row
    items.execute("TRUNCATE whk.outbox")
    rows, plans = explained(items, "UPDATE shop.items SET qty = qty + 1 RETURNING id", [])
    assert len(rows) == 300
    capture = plan_of(plans, "INSERT INTO whk.outbox")
    scans = tuplestore_scan_loops(capture)
    assert len(scans) == 2, capture  # old and new, each read ...
    assert scans == ["1", "1"], capture  # ... once
    events = outbox(items)
    assert len(events) == 300
    assert {tuple(e["payload"]["data"]["changed"]) for e in events} == {("qty",)}
    # Small statements keep the cached plan, and still pair each row with its own old image.
    items.execute("UPDATE shop.items SET note = 'n' || qty WHERE id <= 3")
    small = [e["payload"]["data"] for e in outbox(items)[300:]]
    assert len(small) == 3
    for data in small:
        assert data["old"]["id"] == data["new"]["id"]
        assert data["new"]["note"] == f"n{data['old']['qty']}"
        assert data["changed"] == ["note"]


def test_trigger_functions_are_security_definer_owned_by_the_whk_owner(
    items: psycopg.Connection[Any],
) -> None:
    rows = items.execute(
        "SELECT p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) = pg_get_userbyid(n.nspowner)"
        " FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE t.tgrelid = 'shop.items'::regclass"
    ).fetchall()
    assert len(rows) == 3
    for secdef, config, owned_by_whk_owner in rows:
        assert secdef is True
        # Every name in the generated code is qualified (see the next test): no SET clause to pay for.
        assert config is None
        assert owned_by_whk_owner is True
    # A user-written condition is SQL WHK did not write: its function resolves names in pg_catalog only.
    items.execute("SELECT whk.enable_capture('shop.items', 'item', condition => 'new.qty > 0')")
    configs = items.execute(
        "SELECT DISTINCT p.proconfig FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE t.tgrelid = 'shop.items'::regclass"
    ).fetchall()
    assert configs == [(["search_path=pg_catalog, pg_temp"],)]


def test_capture_triggers_are_per_statement_with_transition_tables(items: psycopg.Connection[Any]) -> None:
    kinds = items.execute(
        "SELECT tgname, tgtype & 1 = 0 AS per_statement, tgoldtable IS NOT NULL OR tgnewtable IS NOT NULL"
        " FROM pg_trigger WHERE tgrelid = 'shop.items'::regclass ORDER BY tgname"
    ).fetchall()
    assert kinds == [
        ("whk_capture_delete", True, True),
        ("whk_capture_insert", True, True),
        ("whk_capture_update", True, True),
    ]
    # One function per operation that runs only its own statement: no TG_OP branch on every call.
    functions = items.execute(
        "SELECT t.tgname, p.proname::text, p.prosrc LIKE '%TG_OP%', p.prosrc LIKE '%whk.outbox%'"
        " FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE t.tgrelid = 'shop.items'::regclass ORDER BY t.tgname"
    ).fetchall()
    assert functions == [
        ("whk_capture_delete", "capture_shop_items_del", False, True),
        ("whk_capture_insert", "capture_shop_items_ins", False, True),
        ("whk_capture_update", "capture_shop_items_upd", False, True),
    ]
    # Dropping an operation drops its trigger and its function.
    items.execute("SELECT whk.enable_capture('shop.items', 'item', operations => ARRAY['INSERT'])")
    left = items.execute(
        "SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p"
        " WHERE p.proname LIKE 'capture\\_shop\\_items%'"
    ).fetchone()
    assert left == (["capture_shop_items_ins"],)


# The generic ones (capture_support.HIJACKERS) plus what only a trigger on shop.items would call.
HIJACKERS = (
    capture_support.HIJACKERS
    + """
CREATE FUNCTION evil.to_jsonb(shop.items) RETURNS jsonb LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.jt(jsonb, text) RETURNS text LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = evil.jt);
CREATE FUNCTION evil.jj(jsonb, jsonb) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.= (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.jj);
CREATE FUNCTION evil.bb(bigint, bigint) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.bb);
CREATE FUNCTION evil.tt(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.tt);
"""
)


def test_the_callers_search_path_cannot_redirect_a_name_in_the_trigger(
    items: psycopg.Connection[Any],
) -> None:
    """The generated functions run with the whk owner's rights and no SET clause: every function and operator
    they use must be qualified, or a caller could put its own `to_jsonb` or `->>` first in search_path."""
    items.execute(HIJACKERS)
    register_dispatcher(items, idle=True)  # the wake-up path runs too
    with items.transaction():
        items.execute("SET LOCAL search_path = evil, public, pg_catalog")
        # The trap is real: unqualified names resolve to the schema first in the path ...
        with pytest.raises(psycopg.errors.RaiseException, match="hijacked"), items.transaction():
            items.execute("SELECT '{\"a\": 1}'::jsonb ->> 'a'")
        with pytest.raises(psycopg.errors.RaiseException, match="hijacked"), items.transaction():
            items.execute("SELECT gen_random_uuid()")
        # ... but not inside the capture trigger, on any operation.
        items.execute("INSERT INTO shop.items (sku, qty) VALUES ('H-1', 1), ('H-2', 2)")
        items.execute("UPDATE shop.items SET qty = qty + 1")
        items.execute("DELETE FROM shop.items WHERE sku OPERATOR(pg_catalog.=) 'H-1'")  # ours: qualified too
    events = outbox(items)
    assert [e["event_type"] for e in events] == ["item.created"] * 2 + ["item.updated"] * 2 + ["item.deleted"]
    assert events[2]["payload"]["data"]["changed"] == ["qty"]
    assert all(e["event_key"] for e in events)


def test_the_outbox_carries_only_the_indexes_its_readers_need(conn: psycopg.Connection[Any]) -> None:
    """Every outbox index is paid by every captured ERP commit (see docs/capture.md, Performance)."""
    names = conn.execute(
        "SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'whk.outbox'::regclass"
    ).fetchone()
    assert names == (["outbox_created_id_idx", "outbox_pending_idx", "outbox_pkey"],)


def test_the_outbox_has_no_check_constraint_that_every_statement_would_prepare(
    conn: psycopg.Connection[Any],
) -> None:
    """PostgreSQL prepares a table's CHECK expressions again in each INSERT statement: ~10 us per constraint
    on every captured ERP statement (migration 0018). NOT NULL is an attribute flag and costs nothing."""
    checks = conn.execute(
        "SELECT array_agg(c.conname::text ORDER BY c.conname) FROM pg_constraint c WHERE c.contype = 'c'"
        " AND (c.conrelid = 'whk.outbox'::regclass OR c.conrelid IN"
        "      (SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'whk.outbox'::regclass))"
    ).fetchone()
    assert checks == (None,)
    # The columns still refuse NULLs.
    with pytest.raises(psycopg.errors.NotNullViolation), conn.transaction():
        conn.execute("INSERT INTO whk.outbox (event_type, operation, status) VALUES ('x.y', NULL, 'pending')")


def test_enable_twice_is_harmless_and_disable_stops_events(items: psycopg.Connection[Any]) -> None:
    fn_before = items.execute("SELECT function_name, enabled_at FROM whk.capture_config").fetchall()
    assert items.execute("SELECT whk.enable_capture('shop.items', 'item')").fetchone() == (False,)
    assert items.execute("SELECT function_name, enabled_at FROM whk.capture_config").fetchall() == fn_before
    triggers = items.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shop.items'::regclass"
    ).fetchone()
    assert triggers == (3,)
    items.execute("INSERT INTO shop.items (sku) VALUES ('once')")
    assert len(outbox(items)) == 1  # one event, not two

    view = items.execute(
        "SELECT table_name, event_prefix, event_types, key_columns, active FROM whk.captured_tables"
    ).fetchall()
    assert view == [("shop.items", "item", ["item.deleted", "item.created", "item.updated"], ["id"], True)]

    assert items.execute("SELECT whk.disable_capture('shop.items')").fetchone() == (True,)
    assert items.execute("SELECT whk.disable_capture('shop.items')").fetchone() == (False,)
    items.execute("INSERT INTO shop.items (sku) VALUES ('after disable')")
    items.execute("UPDATE shop.items SET qty = 9")
    assert len(outbox(items)) == 1
    assert items.execute("SELECT count(*) FROM whk.captured_tables").fetchone() == (0,)
    leftovers = items.execute(
        "SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture\\_shop\\_items%'"
        " UNION ALL SELECT count(*) FROM pg_trigger WHERE tgrelid = 'shop.items'::regclass"
    ).fetchall()
    assert leftovers == [(0,), (0,)]


def test_listened_columns_and_condition_filter_at_capture(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE public.acct (id int PRIMARY KEY, email text, balance numeric, seen_at timestamptz,"
        " region text)"
    )
    conn.execute(
        "SELECT whk.enable_capture('public.acct', 'acct', columns => ARRAY['email', 'balance'],"
        " condition => 'coalesce(new.region, old.region) = ''eu''')"
    )
    conn.execute("INSERT INTO public.acct VALUES (1, 'a@x', 10, now(), 'eu'), (2, 'b@x', 5, now(), 'us')")
    conn.execute("UPDATE public.acct SET seen_at = now() + interval '1 hour'")  # not a listened column
    conn.execute("UPDATE public.acct SET balance = balance + 1")  # listened; condition keeps only eu
    conn.execute("DELETE FROM public.acct")
    events = [(e["event_type"], e["event_key"]) for e in outbox(conn)]
    assert events == [("acct.created", "1"), ("acct.updated", "1"), ("acct.deleted", "1")]
    settings = conn.execute("SELECT columns, condition FROM whk.captured_tables").fetchone()
    assert settings == (["balance", "email"], "coalesce(new.region, old.region) = 'eu'")


def test_listened_columns_and_condition_hold_for_updates_over_eight_rows(
    conn: psycopg.Connection[Any],
) -> None:
    """Statements over 8 rows run the same capture statement through EXECUTE (migration 0016)."""
    conn.execute(
        "CREATE TABLE public.acct (id int PRIMARY KEY, balance numeric, seen_at timestamptz, region text)"
    )
    conn.execute(
        "SELECT whk.enable_capture('public.acct', 'acct', columns => ARRAY['balance'],"
        " condition => 'coalesce(new.region, old.region) = ''eu''')"
    )
    conn.execute(
        "INSERT INTO public.acct SELECT g, 10, now(), CASE WHEN g <= 5 THEN 'eu' ELSE 'us' END"
        " FROM generate_series(1, 20) AS g"
    )
    conn.execute("TRUNCATE whk.outbox")
    conn.execute("UPDATE public.acct SET seen_at = now() + interval '1 hour'")  # not a listened column
    assert outbox(conn) == []
    conn.execute("UPDATE public.acct SET balance = balance + 1")  # 20 rows; the condition keeps 5
    events = outbox(conn)
    assert sorted(int(e["event_key"]) for e in events) == [1, 2, 3, 4, 5]
    for e in events:
        data = e["payload"]["data"]
        assert data["changed"] == ["balance"]
        assert (data["old"]["id"], data["old"]["balance"], data["new"]["balance"]) == (
            data["new"]["id"],
            10,
            11,
        )


def test_key_column_composite_primary_key_and_primary_key_changes(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE public.line (doc int, line int, code text, qty int, PRIMARY KEY (doc, line))")
    conn.execute("CREATE TABLE public.tagged (id int PRIMARY KEY, code text)")
    conn.execute("SELECT whk.enable_capture('public.line', 'line')")
    conn.execute("SELECT whk.enable_capture('public.tagged', 'tagged', key_column => 'code')")
    conn.execute("INSERT INTO public.line VALUES (7, 1, 'a', 1), (7, 2, 'b', 2)")
    conn.execute("INSERT INTO public.tagged VALUES (1, 'X-1')")
    # Renumber every line at once: old and new rows must stay paired even though the key changes.
    conn.execute("UPDATE public.line SET line = line + 10, qty = qty * 10")
    events = outbox(conn)
    assert [e["event_key"] for e in events[:2]] == ["[7, 1]", "[7, 2]"]
    assert events[2]["event_key"] == "X-1"
    updates = [e["payload"]["data"] for e in events[3:]]
    pairs = sorted((d["old"]["line"], d["new"]["line"], d["old"]["qty"], d["new"]["qty"]) for d in updates)
    assert pairs == [(1, 11, 1, 10), (2, 12, 2, 20)]
    assert all(d["changed"] == ["line", "qty"] for d in updates)


def test_operations_subset_and_partitioned_tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE public.ev (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
    conn.execute(
        "CREATE TABLE public.ev_2026 PARTITION OF public.ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
    )
    conn.execute(
        "CREATE TABLE public.ev_2027 PARTITION OF public.ev FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')"
    )
    conn.execute("SELECT whk.enable_capture('public.ev', 'ev', operations => ARRAY['INSERT', 'UPDATE'])")
    conn.execute("INSERT INTO public.ev VALUES (1, '2026-05-01')")
    conn.execute("UPDATE public.ev SET at = '2027-05-01'")  # moves across partitions
    conn.execute("DELETE FROM public.ev")
    events = outbox(conn)
    assert [e["event_type"] for e in events] == ["ev.created", "ev.updated"]
    assert events[1]["payload"]["data"]["changed"] == ["at"]
    registered = conn.execute(
        "SELECT name FROM whk.whk_02_eventos WHERE name LIKE 'ev.%' ORDER BY 1"
    ).fetchall()
    assert registered == [("ev.created",), ("ev.updated",)]


def test_enable_capture_registers_a_schema_that_its_own_events_satisfy(
    items: psycopg.Connection[Any],
) -> None:
    items.execute("INSERT INTO shop.items (sku, qty, note) VALUES ('V', 1, NULL)")
    items.execute("UPDATE shop.items SET qty = 2, touched_at = now()")
    items.execute("DELETE FROM shop.items")
    verdicts = items.execute(
        "SELECT event_type, whk.validate_payload(event_type, event_version, payload)"
        " FROM whk.outbox_events ORDER BY id"
    ).fetchall()
    assert verdicts == [("item.created", None), ("item.updated", None), ("item.deleted", None)]
    category = items.execute(
        "SELECT DISTINCT category FROM whk.whk_02_eventos WHERE name LIKE 'item.%'"
    ).fetchall()
    assert category == [("capture",)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("SELECT whk.enable_capture('shop.items', 'Bad Prefix')", "invalid event prefix"),
        ("SELECT whk.enable_capture('shop.items', 'item', key_column => 'nope')", "does not exist"),
        ("SELECT whk.enable_capture('shop.items', 'item', columns => ARRAY['qty', 'nope'])", "nope"),
        (
            "SELECT whk.enable_capture('shop.items', 'item', condition => 'new.nope > 1')",
            "invalid capture condition",
        ),
        (
            "SELECT whk.enable_capture('shop.items', 'item', condition => 'true; DROP TABLE x')",
            "single SQL expression",
        ),
        ("SELECT whk.enable_capture('shop.v', 'v')", "is not a table"),
        ("SELECT whk.enable_capture('shop.other', 'item')", "already used by table"),
        (
            "SELECT whk.enable_capture('shop.items', 'item', operations => ARRAY['TRUNCATE'])",
            "invalid operations",
        ),
    ],
)
def test_enable_capture_refuses_bad_settings_clearly(
    items: psycopg.Connection[Any], call: str, message: str
) -> None:
    items.execute("CREATE VIEW shop.v AS SELECT * FROM shop.items")
    items.execute("CREATE TABLE shop.other (id int PRIMARY KEY)")
    with pytest.raises(psycopg.Error, match=message):
        items.execute(call)
    assert items.execute("SELECT count(*) FROM whk.capture_config").fetchone() == (1,)


def test_reconfiguring_replaces_the_settings(items: psycopg.Connection[Any]) -> None:
    assert items.execute(
        "SELECT whk.enable_capture('shop.items', 'item', columns => ARRAY['qty'])"
    ).fetchone() == (True,)
    items.execute("INSERT INTO shop.items (sku) VALUES ('r')")
    items.execute("UPDATE shop.items SET note = 'ignored now'")
    items.execute("UPDATE shop.items SET qty = 4")
    assert [e["event_type"] for e in outbox(items)] == ["item.created", "item.updated"]
    assert items.execute("SELECT count(*) FROM whk.capture_config").fetchone() == (1,)


def test_columns_named_like_internal_aliases_are_captured_as_columns(conn: psycopg.Connection[Any]) -> None:
    """A column called t, new, old or whk_j must not be confused with the generated SQL's own names."""
    conn.execute("CREATE TABLE public.odd (id int PRIMARY KEY, t text, o text, whk_rn int)")
    conn.execute("SELECT whk.enable_capture('public.odd', 'odd', 'id')")
    conn.execute("INSERT INTO public.odd VALUES (1, 'tee', 'oh', 7)")
    conn.execute("UPDATE public.odd SET t = 'tea'")
    rows = conn.execute(
        "SELECT event_type, payload->'data'->'new', payload->'data'->'old' FROM whk.outbox_events ORDER BY id"
    ).fetchall()
    assert rows[0][0] == "odd.created"
    assert rows[0][1] == {"id": 1, "t": "tee", "o": "oh", "whk_rn": 7}
    assert rows[1][1]["t"] == "tea"
    assert rows[1][2]["t"] == "tee"
