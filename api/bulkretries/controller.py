"""Bulk retries: ``GET /api/whk/bulk-retries/{id}`` (progress) and ``POST /api/whk/bulk-retries/{id}/cancel``.
``POST /api/whk/deliveries/bulk-retry`` starts them; the job worker does the work (pgqueuer entrypoint
``bulk_retry``); the state lives in ``whk.bulk_retries`` and changes only through the ``whk.bulk_retry_*``
SQL functions."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.bulkretries.repository import BulkRetryRepository
from api.bulkretries.schemas import BulkRetry
from api.deps import Principal
from api.errors import Conflict, NotFound
from api.shapes import IdPath

__all__ = ["BulkRetryController"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]


class BulkRetryController(Controller):
    path = "/api/whk/bulk-retries"
    tags = ["deliveries"]  # noqa: RUF012

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = BulkRetryRepository()
        self.audit_log = AuditLog()

    async def _get(self, conn: AsyncConnection[Any], principal: Principal, bulk_id: int) -> BulkRetry:
        row = await self.repo.get(conn, tenant=principal.tenant_filter(), bulk_id=bulk_id)
        if row is None:
            raise NotFound(f"bulk retry {bulk_id} not found")
        return row

    @get("/{bulk_id:int}", operation_id="getBulkRetry", summary="A bulk retry's progress (done/total)")
    async def get_bulk_retry(self, conn: Conn, principal: Who, bulk_id: IdPath) -> BulkRetry:
        return await self._get(conn, principal, bulk_id)

    @post(
        "/{bulk_id:int}/cancel",
        operation_id="cancelBulkRetry",
        summary="Stop a queued or running bulk retry (what it already re-queued is still delivered)",
        status_code=HTTP_200_OK,
    )
    async def cancel(self, conn: Conn, principal: Who, bulk_id: IdPath) -> BulkRetry:
        before = await self._get(conn, principal, bulk_id)
        if not await self.repo.cancel(conn, bulk_id):
            raise Conflict(f"the bulk retry is {before.state}; only queued or running ones can be cancelled")
        after = await self._get(conn, principal, bulk_id)
        await self.audit_log.record(
            conn,
            principal,
            "bulk_retry.cancel",
            "bulk_retry",
            bulk_id,
            {"state": before.state, "done": before.done},
            {"state": after.state, "done": after.done, "requeued": after.requeued},
            consumer_id=before.consumer_id,
        )
        return after
