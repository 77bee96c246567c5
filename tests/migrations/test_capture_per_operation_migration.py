"""Migration 0019 capture_per_operation: tables captured before it keep capturing, through new functions."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from whk import migrate

pytestmark = pytest.mark.db


def _trigger_functions(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            "SELECT t.tgname, p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
            " WHERE t.tgrelid = 'public.items'::regclass ORDER BY t.tgname"
        ).fetchall()
    ]


def test_captured_tables_move_to_one_function_per_operation(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=18)
        conn.execute("CREATE TABLE public.items (sku text PRIMARY KEY, qty int)")
        conn.execute("SELECT whk.enable_capture('public.items', 'inv.item', 'sku')")
        conn.execute("INSERT INTO public.items VALUES ('A', 1)")
        # Before: one function behind the three triggers, branching on TG_OP.
        assert {f for _, f in _trigger_functions(conn)} == {"capture_public_items"}

        migrate.migrate(conn)

        assert _trigger_functions(conn) == [
            ("whk_capture_delete", "capture_public_items_del"),
            ("whk_capture_insert", "capture_public_items_ins"),
            ("whk_capture_update", "capture_public_items_upd"),
        ]
        # The old function is gone, and the view still sees the table as actively captured.
        assert conn.execute("SELECT to_regprocedure('whk.capture_public_items()')").fetchone() == (None,)
        assert conn.execute("SELECT active FROM whk.captured_tables").fetchone() == (True,)
        conn.execute("INSERT INTO public.items VALUES ('B', 2)")
        conn.execute("UPDATE public.items SET qty = qty + 1 WHERE sku = 'A'")
        conn.execute("UPDATE public.items SET qty = qty WHERE sku = 'B'")  # no-op: no event
        conn.execute("DELETE FROM public.items WHERE sku = 'B'")
        events = conn.execute("SELECT event_type, event_key FROM whk.outbox ORDER BY id").fetchall()
        assert events == [
            ("inv.item.created", "A"),
            ("inv.item.created", "B"),
            ("inv.item.updated", "A"),
            ("inv.item.deleted", "B"),
        ]
        # Disabling removes every generated function.
        assert conn.execute("SELECT whk.disable_capture('public.items')").fetchone() == (True,)
        left = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture\\_public\\_items%'"
        ).fetchone()
        assert left == (0,)
