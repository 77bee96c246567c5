"""Every state change of a delivery or a webhook lives in sql/functions, never in API or dispatcher SQL.

The runtime queries (``api/**/*.sql``, ``dispatcher/*.sql``) are parsed with pglast, their ``{fragment}``
slots and bound parameters filled with neutral text, and every data-modifying statement (CTEs included)
is checked: none writes the deliveries (``whk.delivery_queue``, ``whk.delivery_history``), and none sets a
webhook's status columns. Those changes go
through ``whk.pause_webhook``, ``whk.resume_webhook``, ``whk.disable_webhook``, ``whk.delete_webhook``,
the claim and the outcome functions, so that the dispatcher, the API and a DBA move the same state the
same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pglast import ast, parse_sql
from pglast.visitors import Visitor

from api.webhooks import repository
from whk.sqlfiles import parse_named_queries

ROOT = Path(__file__).resolve().parents[2]
QUERY_FILES = sorted([*ROOT.glob("api/**/*.sql"), *ROOT.glob("dispatcher/*.sql")])
# The webhook columns that make its state: only the functions named above write them.
WEBHOOK_STATE = {"status", "deleted_at", "disabled_reason", "disabled_at"}
# The deliveries' tables (whk.whk_03_entregas is the read-only view over them).
DELIVERY_TABLES = {"delivery_queue", "delivery_history", "whk_03_entregas"}
# What the repositories compose into the slots (only ever lists of columns, conditions, sort keys).
_FRAGMENT = re.compile(r"^--\s*name:\s*(\w+)\s+:fragment\s*$", re.MULTILINE)
_SLOTS = {"assignments": "name = NULL", "columns": "1", "where": "true", "order": "1"}


def runnable(text: str) -> str:
    """``text`` with its ``{slot}`` fragments and ``%(name)s`` / ``%s`` parameters replaced, for parsing (any
    psycopg format: ``s``, ``b`` binary, ``t`` text)."""
    text = re.sub(r"\{(\w+)\}", lambda m: _SLOTS.get(m.group(1), "1"), text)
    return re.sub(r"%\(\w+\)[sbt]|%[sbt]", "NULL", text)


class Writes(Visitor):
    """Collects (table, columns set) of every UPDATE and (table, verb) of every INSERT / DELETE."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, frozenset[str]]] = []

    def visit_UpdateStmt(self, ancestors: Any, node: ast.UpdateStmt) -> None:  # noqa: N802 (pglast's naming)
        cols = frozenset(t.name for t in node.targetList)
        self.found.append((node.relation.relname, "UPDATE", cols))

    def visit_InsertStmt(self, ancestors: Any, node: ast.InsertStmt) -> None:  # noqa: N802 (pglast's naming)
        self.found.append((node.relation.relname, "INSERT", frozenset()))

    def visit_DeleteStmt(self, ancestors: Any, node: ast.DeleteStmt) -> None:  # noqa: N802 (pglast's naming)
        self.found.append((node.relation.relname, "DELETE", frozenset()))


def state_writes(text: str) -> list[str]:
    visitor = Writes()
    visitor(parse_sql(runnable(text)))
    bad = []
    for table, verb, cols in visitor.found:
        if table in DELIVERY_TABLES:
            bad.append(f"{verb} of {table}")
        elif table == "whk_01_webhooks" and cols & WEBHOOK_STATE:
            bad.append(f"UPDATE of whk_01_webhooks.{', '.join(sorted(cols & WEBHOOK_STATE))}")
    return bad


def test_the_query_files_are_found():
    names = {str(p.relative_to(ROOT)) for p in QUERY_FILES}
    assert {"api/webhooks/queries.sql", "api/deliveries/queries.sql", "dispatcher/queries.sql"} <= names


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_runtime_query_changes_delivery_or_webhook_state(path: Path):
    text = path.read_text("utf-8")
    fragments = set(_FRAGMENT.findall(text))  # column lists spliced into other blocks, not statements
    queries = parse_named_queries(text, origin=str(path))
    problems = {
        name: bad for name, sql in queries.items() if name not in fragments and (bad := state_writes(sql))
    }
    assert problems == {}, f"{path}: move these into sql/functions: {problems}"


def test_the_webhook_update_cannot_set_state_columns():
    """``update_webhook`` fills its ``{assignments}`` slot from an allow-list: status is not on it."""
    assert not WEBHOOK_STATE & set(repository._PLAIN + repository._JSONPATH + repository._JSONB_STRUCT)


@pytest.mark.parametrize(
    "text",
    [
        "UPDATE whk.whk_01_webhooks w SET status = 'paused', updated_at = now() WHERE w.id = %(id)s",
        "WITH gone AS (UPDATE whk.whk_01_webhooks w SET deleted_at = now() WHERE w.id = %(id)s"
        " RETURNING w.id) SELECT count(*) FROM gone",
        "WITH c AS (UPDATE whk.delivery_queue d SET status = 'cancelled' WHERE d.id = %s RETURNING 1)"
        " SELECT count(*) FROM c",
        "DELETE FROM whk.delivery_queue d WHERE {where}",
        "INSERT INTO whk.delivery_history SELECT * FROM whk.delivery_queue",
    ],
)
def test_the_check_sees_state_changes_written_in_a_query(text: str):
    assert state_writes(text)


def test_the_check_lets_other_writes_through():
    plain = "UPDATE whk.whk_01_webhooks w SET {assignments}, updated_at = now() WHERE w.id = %s"
    assert state_writes(plain) == []
    assert state_writes("SELECT whk.pause_webhook(%(id)s)") == []
