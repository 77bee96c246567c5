"""What an ERP table actually runs: the generated capture code of erp.orders, checked in as a golden file.

The capture trigger functions exist only inside whk.capture_install's format() strings. The file
sql/examples/capture_erp_orders.sql is their rendering for the demo's erp.orders (a condition, INSERT and
UPDATE captured), so a reader can see the code an ERP statement runs, and a review of a change to
capture_install shows its effect on that code. Regenerate it after a deliberate change with
``WHK_UPDATE_GOLDEN=1 pytest tests/db/test_capture_golden.py``.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

from tests.db.capture_support import install_demo
from tests.support.pg import REPO

pytestmark = pytest.mark.db

GOLDEN = REPO / "sql" / "examples" / "capture_erp_orders.sql"
HEADER = """\
-- The capture code that whk.capture_install generates for the demo's erp.orders (sql/demo/erp.sql:
-- INSERT and UPDATE captured, with a condition). Not run by anything: a rendering checked by
-- tests/db/test_capture_golden.py, so a reader sees what an ERP statement runs. Do not edit by hand;
-- regenerate with WHK_UPDATE_GOLDEN=1 pytest tests/db/test_capture_golden.py.
"""


def render(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT function_name FROM whk.capture_config WHERE tbl = 'erp.orders'::regclass"
    ).fetchone()
    assert row is not None
    functions = conn.execute(
        """
        SELECT pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.proname LIKE %s || '\\_%%' AND p.pronamespace = 'whk'::regnamespace
        ORDER BY p.proname
        """,
        [row[0]],
    ).fetchall()
    triggers = conn.execute(
        """
        SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
        WHERE t.tgrelid = 'erp.orders'::regclass AND t.tgname LIKE 'whk\\_capture%%'
        ORDER BY t.tgname
        """
    ).fetchall()
    parts = [HEADER]
    parts += [f"\n{f[0].strip()};\n" for f in functions]
    parts += [f"\n{t[0]};\n" for t in triggers]
    return "".join(parts)


def test_generated_capture_code_of_erp_orders_matches_the_golden_file(conn: psycopg.Connection[Any]) -> None:
    install_demo(conn)
    rendered = render(conn)
    assert "whk.outbox" in rendered and "CREATE TRIGGER" in rendered
    if os.environ.get("WHK_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(rendered, encoding="utf-8")
    assert GOLDEN.read_text(encoding="utf-8") == rendered, (
        "capture_install's output for erp.orders changed: review the difference, then regenerate "
        "sql/examples/capture_erp_orders.sql (WHK_UPDATE_GOLDEN=1)"
    )
