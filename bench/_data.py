"""Data-model helpers shared by the benchmarks that fill deliveries set-based."""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["move_finished_to_history"]


def move_finished_to_history(conn: psycopg.Connection[Any]) -> None:
    """Move the finished deliveries a fill wrote into ``whk.delivery_queue`` to ``whk.delivery_history`` as
    the dispatcher leaves them (finished_at = their last change, in day partitions made for their days):
    the benchmark then reads what a running system holds, live work in the queue and the rest in history."""
    conn.execute(
        "SELECT whk.create_partitions('whk.delivery_history', since => m.oldest) "
        "FROM (SELECT min(updated_at) AS oldest FROM whk.delivery_queue "
        "      WHERE status IN ('delivered', 'cancelled', 'superseded')) m WHERE m.oldest IS NOT NULL"
    )
    conn.execute(
        "WITH gone AS (DELETE FROM whk.delivery_queue "
        "              WHERE status IN ('delivered', 'cancelled', 'superseded') RETURNING *) "
        "INSERT INTO whk.delivery_history SELECT g.*, g.updated_at FROM gone g"
    )
    conn.execute("VACUUM ANALYZE whk.delivery_queue, whk.delivery_history")
