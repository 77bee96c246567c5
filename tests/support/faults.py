"""Poison rows for fault-isolation tests: values the API and the CHECK constraints refuse, written in SQL.

The constraints that would refuse them are dropped first, found in the catalog by the column they mention,
so these helpers keep working whatever bounds the schema sets (the point is a row that is already bad).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def drop_checks(conn: psycopg.Connection[Any], table: str, column: str) -> list[str]:
    """Drop every CHECK constraint of ``whk.<table>`` that mentions ``column``; returns their names."""
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT con.conname FROM pg_constraint con "
            "WHERE con.conrelid = %s::regclass AND con.contype = 'c' "
            "AND pg_get_constraintdef(con.oid) ~ %s",
            [f"whk.{table}", rf"\m{column}\M"],
        ).fetchall()
    ]
    for name in names:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                sql.Identifier("whk", table), sql.Identifier(name)
            )
        )
    return names


def poison_claim(conn: psycopg.Connection[Any], webhook_id: int) -> None:
    """A token bucket the claim cannot count: the webhook's runtime row holds -1e300 tokens while the
    webhook has a rate limit (in bounds), so the claim's floor of the bucket overflows an integer and
    every claim that visits the webhook raises 22003. The bucket is the dispatcher's own state: no CHECK
    guards it, so this is a row a bug or a hand edit could leave, whatever bounds the settings have.
    Fixed by clearing the webhook's rate limit (the bucket is then not read)."""
    conn.execute("UPDATE whk.whk_01_webhooks SET rate_limit_per_second = 10 WHERE id = %s", [webhook_id])
    conn.execute(
        "INSERT INTO whk.webhook_runtime (webhook_id, tokens, tokens_at) VALUES (%s, -1e300, now()) "
        "ON CONFLICT (webhook_id) DO UPDATE SET tokens = -1e300, tokens_at = now()",
        [webhook_id],
    )


def poison_global_default(conn: psycopg.Connection[Any]) -> None:
    """A global default rate that is not a number ("fast"): every claim of every webhook reads it and
    raises 22P02, so no single webhook explains the fault. The setting's bounds (a CHECK and the trigger
    whk_05_configuracoes_bounds) would refuse it: both are taken off first."""
    drop_checks(conn, "whk_05_configuracoes", "value")
    conn.execute("ALTER TABLE whk.whk_05_configuracoes DISABLE TRIGGER whk_05_configuracoes_bounds")
    conn.execute(
        'UPDATE whk.whk_05_configuracoes SET value = \'{"per_second": "fast"}\' '
        "WHERE key = 'rate_limit.webhook_default'"
    )


def poison_route(conn: psycopg.Connection[Any], webhook_id: int) -> None:
    """A batch webhook with batch_size 0: routing divides by it when it takes fresh deliveries (22012).
    Routing takes only for webhooks that have their runtime row, so it is made here."""
    drop_checks(conn, "whk_01_webhooks", "batch_size")
    conn.execute(
        "UPDATE whk.whk_01_webhooks SET delivery_mode = 'batch', batch_size = 0 WHERE id = %s", [webhook_id]
    )
    conn.execute(
        "INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s) ON CONFLICT DO NOTHING", [webhook_id]
    )


def poison_record(conn: psycopg.Connection[Any], webhook_id: int) -> None:
    """A breaker override recording an outcome cannot read (failure_threshold is not a number): every
    whk.record_outcomes call carrying one of the webhook's attempts raises 22P02."""
    drop_checks(conn, "whk_01_webhooks", "breaker_config")
    conn.execute(
        'UPDATE whk.whk_01_webhooks SET breaker_config = \'{"failure_threshold": "many"}\' WHERE id = %s',
        [webhook_id],
    )
