"""The worker's SQL (blocks in alerting/queries.sql): job run records, channels, history notes."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from whk.sqlfiles import load_queries

__all__ = ["OpsRepository"]


class OpsRepository:
    def __init__(self) -> None:
        self._q = load_queries("ops.alerting", "queries.sql")

    async def start_run(self, conn: AsyncConnection[Any], job: str, period_s: int, worker: str) -> int:
        cur = await conn.execute(self._q["start_run"], {"job": job, "period_s": period_s, "worker": worker})
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def finish_run(
        self, conn: AsyncConnection[Any], run_id: int, ok: bool, detail: dict[str, Any]
    ) -> None:
        await conn.execute(self._q["finish_run"], {"id": run_id, "ok": ok, "detail": Jsonb(detail)})

    async def create_partitions(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(self._q["create_partitions"], {})

    async def forget_runs(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(self._q["forget_runs"], {})

    async def forget_channels(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute(self._q["forget_channels"], {})
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def channel(self, conn: AsyncConnection[Any], channel_id: int) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(self._q["channel"], {"id": channel_id})
        return await cur.fetchone()

    async def note(self, conn: AsyncConnection[Any], history_id: int, entry: dict[str, Any]) -> None:
        await conn.execute(self._q["note_history"], {"id": history_id, "entries": Jsonb([entry])})
