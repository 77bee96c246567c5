"""``/api/whk/deliveries``: list, read (with attempts), retry, dead letters, statistics, bulk retry and
the explicit ack of webhooks that require confirmation.

Dead letters can be purged for good, one (``DELETE /{id}``) or by filters (``POST /purge``, dry run first).

The static routes (``/failed``, ``/stats``, ``/bulk-retry``, ``/purge``) are distinct from
``/{delivery_id:int}``: the id is typed, so ``failed`` can never be captured as an id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.bulkretries.repository import BulkRetryRepository
from api.deliveries.repository import DeliveryRepository
from api.deliveries.schemas import (
    AckResult,
    BulkRetryRequest,
    BulkRetryResult,
    Delivery,
    DeliveryDetail,
    DeliveryPage,
    DeliveryStats,
    DeliveryStatus,
    PurgeRequest,
    PurgeResult,
    RetryResult,
)
from api.deps import Principal, require_own_consumer
from api.errors import Conflict, NotFound, Unprocessable
from api.shapes import EVENT_TYPE_RE, CursorQ, IdPath, LimitQ
from api.webhooks.repository import WebhookRepository

__all__ = ["DeliveryController"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]
DeliverySort = Literal[
    "id",
    "-id",
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "next_attempt_at",
    "-next_attempt_at",
]
EventTypeQ = Annotated[str | None, QueryParameter(pattern=EVENT_TYPE_RE, max_length=200)]


async def require_refs(
    conn: AsyncConnection[Any],
    principal: Principal,
    webhooks: WebhookRepository,
    *,
    webhook_id: int | None = None,
    consumer_id: int | None = None,
) -> None:
    """Ids named in a query or body must be the caller's own: another tenant's (or a missing) webhook or
    consumer is 404, exactly like in a path, rather than an empty answer."""
    require_own_consumer(principal, consumer_id)
    tenant = principal.tenant_filter()
    if webhook_id is not None and await webhooks.get(conn, tenant=tenant, webhook_id=webhook_id) is None:
        raise NotFound(f"webhook {webhook_id} not found")


class DeliveryController(Controller):
    path = "/api/whk/deliveries"
    tags = ["deliveries"]  # noqa: RUF012

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = DeliveryRepository()
        self.webhooks = WebhookRepository()
        self.bulk_retries = BulkRetryRepository()
        self.audit_log = AuditLog()

    async def _lock_visible(
        self, conn: AsyncConnection[Any], principal: Principal, delivery_id: int
    ) -> Delivery:
        """Lock a delivery the caller may see (another tenant's id is simply not found: 404)."""
        row = await self.repo.lock(conn, tenant=principal.tenant_filter(), delivery_id=delivery_id)
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return row

    @get("/", operation_id="listDeliveries", summary="List deliveries (keyset pagination)")
    async def list_deliveries(
        self,
        conn: Conn,
        principal: Who,
        webhook_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        consumer_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        status: Annotated[list[DeliveryStatus] | None, QueryParameter()] = None,
        event_type: EventTypeQ = None,
        event_id: Annotated[UUID | None, QueryParameter()] = None,
        created_from: Annotated[datetime | None, QueryParameter()] = None,
        created_to: Annotated[datetime | None, QueryParameter()] = None,
        sort: Annotated[DeliverySort, QueryParameter()] = "-id",
        cursor: CursorQ = None,
        limit: LimitQ = 50,
    ) -> DeliveryPage:
        await require_refs(conn, principal, self.webhooks, webhook_id=webhook_id, consumer_id=consumer_id)
        filters = {
            "webhook_id": webhook_id,
            "consumer_id": consumer_id,
            "status": status or None,
            "event_type": event_type,
            "event_id": event_id,
            "created_from": created_from,
            "created_to": created_to,
        }
        items, nxt = await self.repo.listing.page(
            conn, tenant=principal.tenant_filter(), filters=filters, sort=sort, cursor=cursor, limit=limit
        )
        return DeliveryPage(items=items, next_cursor=nxt)

    @get("/failed", operation_id="listFailedDeliveries", summary="Dead letters, most recent first")
    async def list_failed(
        self,
        conn: Conn,
        principal: Who,
        webhook_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        consumer_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        event_type: EventTypeQ = None,
        dead_from: Annotated[datetime | None, QueryParameter()] = None,
        dead_to: Annotated[datetime | None, QueryParameter()] = None,
        sort: Annotated[Literal["-dead_at", "dead_at", "-id", "id"], QueryParameter()] = "-dead_at",
        cursor: CursorQ = None,
        limit: LimitQ = 50,
    ) -> DeliveryPage:
        await require_refs(conn, principal, self.webhooks, webhook_id=webhook_id, consumer_id=consumer_id)
        filters = {
            "webhook_id": webhook_id,
            "consumer_id": consumer_id,
            "event_type": event_type,
            "dead_from": dead_from,
            "dead_to": dead_to,
        }
        items, nxt = await self.repo.dead_letters.page(
            conn,
            tenant=principal.tenant_filter(),
            filters=filters,
            sort=sort,
            cursor=cursor,
            limit=limit,
        )
        return DeliveryPage(items=items, next_cursor=nxt)

    @get("/stats", operation_id="deliveryStats", summary="Success rate, latency percentiles, retry rate")
    async def delivery_stats(
        self,
        conn: Conn,
        principal: Who,
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        webhook_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        top: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> DeliveryStats:
        end = until or datetime.now(UTC)
        start = since or end - timedelta(hours=24)
        if start >= end:
            raise Unprocessable(
                "since must be before until",
                errors=[{"pointer": "/query/since", "message": "must be before until"}],
            )
        if end - start > timedelta(days=366):
            raise Unprocessable(
                "the window is at most 366 days",
                errors=[{"pointer": "/query/since", "message": "at most 366 days before until"}],
            )
        await require_refs(conn, principal, self.webhooks, webhook_id=webhook_id)
        overall, per_webhook, per_consumer = await self.repo.stats(
            conn, tenant=principal.tenant_filter(), since=start, until=end, webhook_id=webhook_id, top=top
        )
        return DeliveryStats(
            since=start, until=end, overall=overall, per_webhook=per_webhook, per_consumer=per_consumer
        )

    @post(
        "/bulk-retry",
        operation_id="bulkRetryDeliveries",
        summary="Re-queue deliveries by filters as a background job (202; dry_run counts, 200)",
        status_code=HTTP_202_ACCEPTED,
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=BulkRetryResult, description="dry_run: the count only, nothing is queued"
            )
        },
    )
    async def bulk_retry(
        self, conn: Conn, principal: Who, data: JSONBody[BulkRetryRequest]
    ) -> Response[BulkRetryResult]:
        if data.created_from and data.created_to and data.created_from >= data.created_to:
            raise Unprocessable(
                "empty time range",
                errors=[{"pointer": "/created_to", "message": "must be after created_from"}],
            )
        await require_refs(conn, principal, self.webhooks, webhook_id=data.webhook_id)
        filters = data.filters()
        tenant = principal.tenant_filter()
        skipped = await self.repo.bulk_skipped(conn, tenant=tenant, filters=filters)
        if data.dry_run:
            matched = await self.repo.bulk_count(conn, tenant=tenant, filters=filters)
            return Response(
                BulkRetryResult(dry_run=True, matched=matched, skipped_deleted_webhook=skipped),
                status_code=HTTP_200_OK,
            )
        job = await self.bulk_retries.start(conn, tenant=tenant, filters=filters, actor=principal.actor)
        await self.audit_log.record(
            conn,
            principal,
            "bulk_retry.start",
            "bulk_retry",
            job.id,
            None,
            {"filters": msgspec.to_builtins(data), "total": job.total, "skipped_deleted_webhook": skipped},
            consumer_id=tenant,
        )
        return Response(
            BulkRetryResult(
                dry_run=False, matched=job.total, skipped_deleted_webhook=skipped, bulk_retry=job
            ),
            status_code=HTTP_202_ACCEPTED,
        )

    @post(
        "/purge",
        operation_id="purgeDeadDeliveries",
        summary="Delete dead letters by filters for good (dry_run counts first)",
        status_code=HTTP_200_OK,
    )
    async def purge(self, conn: Conn, principal: Who, data: JSONBody[PurgeRequest]) -> PurgeResult:
        if data.created_from and data.created_to and data.created_from >= data.created_to:
            raise Unprocessable(
                "empty time range",
                errors=[{"pointer": "/created_to", "message": "must be after created_from"}],
            )
        await require_refs(conn, principal, self.webhooks, webhook_id=data.webhook_id)
        filters = {
            "webhook_id": data.webhook_id,
            "event_type": data.event_type,
            "created_from": data.created_from,
            "created_to": data.created_to,
        }
        tenant = principal.tenant_filter()
        matched = await self.repo.purge_count(conn, tenant=tenant, filters=filters)
        if data.dry_run:
            return PurgeResult(dry_run=True, matched=matched, purged=0)
        ids = await self.repo.purge(conn, tenant=tenant, filters=filters, limit=data.max_deliveries)
        if ids:  # nothing deleted: no audit row
            await self.audit_log.record(
                conn,
                principal,
                "delivery.purge",
                "delivery",
                None,
                None,
                {
                    "filters": msgspec.to_builtins(data),
                    "matched": matched,
                    "purged": len(ids),
                    "first_id": ids[0],
                    "last_id": ids[-1],
                },
                consumer_id=tenant,
            )
        return PurgeResult(dry_run=False, matched=matched, purged=len(ids))

    @delete(
        "/{delivery_id:int}",
        operation_id="purgeDeadDelivery",
        summary="Delete one dead letter for good (409 for any other state)",
        status_code=HTTP_204_NO_CONTENT,
    )
    async def purge_one(self, conn: Conn, principal: Who, delivery_id: IdPath) -> None:
        before = await self._lock_visible(conn, principal, delivery_id)
        if before.status != "dead":
            raise Conflict(f"the delivery is {before.status}; only dead letters can be purged")
        gone = await self.repo.purge_ids(conn, [delivery_id])
        assert gone == [delivery_id]  # locked and dead above, in this transaction
        await self.audit_log.record(
            conn,
            principal,
            "delivery.purge",
            "delivery",
            delivery_id,
            {
                "status": before.status,
                "event_id": str(before.event_id),
                "webhook_id": before.webhook_id,
                "attempts": before.attempts,
                "consumer_id": before.consumer_id,
            },
            None,
        )

    @get("/{delivery_id:int}", operation_id="getDelivery", summary="One delivery with its attempts")
    async def get_delivery(self, conn: Conn, principal: Who, delivery_id: IdPath) -> DeliveryDetail:
        detail = await self.repo.get(conn, tenant=principal.tenant_filter(), delivery_id=delivery_id)
        if detail is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return detail

    @post(
        "/{delivery_id:int}/retry",
        operation_id="retryDelivery",
        summary="Re-queue one delivery now (same webhook-id, fresh schedule)",
        status_code=HTTP_200_OK,
    )
    async def retry_delivery(self, conn: Conn, principal: Who, delivery_id: IdPath) -> RetryResult:
        before = await self._lock_visible(conn, principal, delivery_id)
        if before.status == "in_flight":
            raise Conflict("the delivery is being attempted right now; retry after it finishes")
        if before.status == "superseded":
            raise Conflict(
                f"the delivery was superseded by delivery {before.superseded_by}, which carries the newer "
                "state of its key; retry that one"
            )
        if await self.repo.webhook_deleted(conn, delivery_id):
            raise Conflict("the delivery's webhook was deleted; nothing more is sent to it")
        if before.status == "parked" and before.render_problem is not None:
            # No body in the webhook's pinned major yet: registering the transform releases it.
            raise Conflict(f"the delivery waits for a transform: {before.render_problem}")
        requeued = await self.repo.retry(conn, delivery_id)
        after = await self.repo.lock(conn, tenant=None, delivery_id=delivery_id)
        assert after is not None
        await self.audit_log.record(
            conn,
            principal,
            "delivery.retry",
            "delivery",
            delivery_id,
            {"status": before.status, "attempts": before.attempts, "consumer_id": before.consumer_id},
            {"status": after.status, "requeued": requeued, "consumer_id": after.consumer_id},
        )
        return RetryResult(delivery=after, requeued=requeued)

    @post(
        "/{delivery_id:int}/ack",
        operation_id="ackDelivery",
        summary="Confirm a delivery of a webhook that requires acks (idempotent)",
        status_code=HTTP_200_OK,
    )
    async def ack_delivery(self, conn: Conn, principal: Who, delivery_id: IdPath) -> AckResult:
        before = await self._lock_visible(conn, principal, delivery_id)
        if before.status not in ("awaiting_ack", "delivered"):
            raise Conflict(
                f"the delivery is {before.status}; only awaiting_ack deliveries can be acknowledged"
            )
        acked = await self.repo.ack(conn, delivery_id)
        after = await self.repo.lock(conn, tenant=None, delivery_id=delivery_id)
        assert after is not None
        if before.status == "awaiting_ack":
            await self.audit_log.record(
                conn,
                principal,
                "delivery.ack",
                "delivery",
                delivery_id,
                {"status": before.status, "consumer_id": before.consumer_id},
                {"status": after.status, "consumer_id": after.consumer_id},
            )
        return AckResult(delivery=after, acked=acked)
