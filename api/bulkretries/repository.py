"""SQL of bulk retries (queries.sql beside this file)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from api.bulkretries.schemas import BulkRetry
from api.rows import fetch_one, fetch_value
from whk.sqlfiles import load_queries

__all__ = ["BulkRetryRepository"]


class BulkRetryRepository:
    def __init__(self) -> None:
        self._q = load_queries(__package__ or "api.bulkretries", "queries.sql")

    async def start(
        self, conn: AsyncConnection[Any], *, tenant: int | None, filters: dict[str, Any], actor: str
    ) -> BulkRetry:
        """Record the bulk retry and queue its job (``whk.bulk_retry_start``): the job as it starts."""
        params = {**filters, "tenant": tenant, "created_by": actor}
        bulk_id = int(await fetch_value(conn, self._q["start"], params))
        job = await self.get(conn, tenant=tenant, bulk_id=bulk_id)
        assert job is not None  # just created in this transaction, with the caller's tenant
        return job

    async def get(self, conn: AsyncConnection[Any], *, tenant: int | None, bulk_id: int) -> BulkRetry | None:
        return await fetch_one(conn, self._q["get"], {"id": bulk_id, "tenant": tenant}, BulkRetry)

    async def cancel(self, conn: AsyncConnection[Any], bulk_id: int) -> bool:
        return bool(await fetch_value(conn, self._q["cancel"], {"id": bulk_id}))
