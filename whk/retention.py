"""Data retention: drop expired days of the outbox, the attempt log and the delivery history; delete audit
rows.

The SQL functions (``whk.retention_*``, ``whk.drop_partitions``) decide what goes; this module only
sequences them, one statement per transaction on an autocommit connection, so each batch commits on its
own and no lock outlives a batch. The worker's ``retention`` schedule runs :func:`arun`; ``whk db
retention`` runs :func:`run` and ``--dry-run`` prints :func:`plan`. A DBA runs the same calls with psql
(docs/dba.md, "Retention").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection, Connection

from whk.sqlfiles import load_queries

__all__ = ["BATCH_ROWS", "MAX_BATCHES", "PlanRow", "Report", "arun", "plan", "run"]

BATCH_ROWS = 10_000
"""Rows per DELETE statement: short enough that no batch holds its locks for long."""
MAX_BATCHES = 500
"""Batches per kind and run (5 M rows at BATCH_ROWS): a run stays bounded, the next one continues."""
MAX_PARTITION_DROPS = 1000
"""Partitions dropped per table and run, one per transaction."""

_DROPS = ("drop_outbox", "drop_attempts", "drop_history")
_STEPS = (("audit", "delete_audit"),)


class PlanRow(msgspec.Struct, frozen=True):
    """One line of the dry run: an old partition (outbox, attempt log, delivery history) or the audit
    deletes."""

    kind: str
    item: str
    horizon: datetime
    action: str
    est_rows: int | None
    bytes: int | None


class Report(msgspec.Struct):
    """What one run removed: partitions dropped (and why others were kept), rows deleted per kind."""

    dropped: list[str] = msgspec.field(default_factory=list)
    kept: dict[str, str] = msgspec.field(default_factory=dict)
    freed_bytes: int = 0
    deleted: dict[str, int] = msgspec.field(default_factory=dict)


def _queries() -> dict[str, str]:
    return load_queries("whk", "retention.sql")


def plan(conn: Connection[Any]) -> list[PlanRow]:
    """What a run would remove now (removes nothing)."""
    rows = conn.execute(_queries()["plan"]).fetchall()
    return [PlanRow(*r) for r in rows]


def _note_drops(report: Report, rows: list[Any]) -> bool:
    """Record one call's answer; True when it dropped a partition (call again)."""
    more = False
    for name, dropped, reason, size in rows:
        if dropped:
            report.dropped.append(name)
            report.freed_bytes += int(size or 0)
            more = True
        else:
            report.kept[name] = reason
    return more


def run(conn: Connection[Any], *, batch: int = BATCH_ROWS, max_batches: int = MAX_BATCHES) -> Report:
    """Run retention now on an autocommit connection."""
    q = _queries()
    report = Report()
    conn.execute(q["create_partitions"])
    for drop in _DROPS:
        for _ in range(MAX_PARTITION_DROPS):
            if not _note_drops(report, conn.execute(q[drop]).fetchall()):
                break
    for kind, name in _STEPS:
        total = 0
        for _ in range(max_batches):
            row = conn.execute(q[name], {"batch": batch}).fetchone()
            n = int(row[0]) if row else 0
            total += n
            if n < batch:
                break
        report.deleted[kind] = total
    return report


async def arun(
    conn: AsyncConnection[Any], *, batch: int = BATCH_ROWS, max_batches: int = MAX_BATCHES
) -> Report:
    """:func:`run` for the worker's asynchronous connections."""
    q = _queries()
    report = Report()
    await conn.execute(q["create_partitions"])
    for drop in _DROPS:
        for _ in range(MAX_PARTITION_DROPS):
            cur = await conn.execute(q[drop])
            if not _note_drops(report, await cur.fetchall()):
                break
    for kind, name in _STEPS:
        total = 0
        for _ in range(max_batches):
            cur = await conn.execute(q[name], {"batch": batch})
            row = await cur.fetchone()
            n = int(row[0]) if row else 0
            total += n
            if n < batch:
                break
        report.deleted[kind] = total
    return report
