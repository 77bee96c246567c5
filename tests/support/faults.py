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
    """A rate limit the claim's token bucket cannot compute (1e308 requests/s: the bucket holds more
    tokens than an integer can count, or overflows): every claim that visits the webhook raises 22003."""
    drop_checks(conn, "whk_01_webhooks", "rate_limit_per_second")
    conn.execute("UPDATE whk.whk_01_webhooks SET rate_limit_per_second = 1e308 WHERE id = %s", [webhook_id])


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
