"""Reading the plans PostgreSQL really executed, nested statements included (auto_explain)."""

from __future__ import annotations

import re
from typing import Any

import psycopg


def explained(conn: psycopg.Connection[Any], sql: str, params: list[Any]) -> tuple[list[Any], str]:
    """Run ``sql`` with auto_explain on for nested statements; returns its rows and every plan logged."""
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "log_min_duration = 0",
        "log_analyze = on",
        "log_timing = off",
        "log_nested_statements = on",
        "log_level = notice",
    ):
        conn.execute(f"SET auto_explain.{setting}")
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.execute("SET auto_explain.log_min_duration = -1")
    return rows, "\n".join(plans)


def plan_of(plans: str, marker: str) -> str:
    """The first logged plan whose statement text contains ``marker``."""
    found = [p for p in plans.split("Query Text:") if marker in p]
    assert found, f"no plan logged for a statement containing {marker!r}"
    return found[0]


def tuplestore_scan_loops(plan: str) -> list[str]:
    """How many times each transition table (a Named Tuplestore Scan) was read in ``plan``."""
    return re.findall(r"Named Tuplestore Scan[^\n]*loops=(\d+)", plan)
