"""Delivery persistence and statistics (blocks in queries.sql); re-queueing and acks go through the
delivery engine's SQL functions (``whk.retry_deliveries``, ``whk.ack_delivery``) so the API never
bypasses the state machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection, sql

from api import listing
from api.deliveries.schemas import Delivery, DeliveryAttempt, DeliveryDetail, DeliveryStatsRow, Percentiles
from api.rows import fetch_all, fetch_column, fetch_one, fetch_value
from whk.sqlfiles import load_queries

__all__ = ["DELIVERY_FILTERS", "DELIVERY_SORTS", "FAILED_SORTS", "DeliveryRepository"]

DELIVERY_FILTERS = (
    listing.FilterSpec("webhook_id", "d.webhook_id"),
    listing.FilterSpec("consumer_id", "d.consumer_id"),
    listing.FilterSpec("status", "d.status", op="any", cast="text"),
    listing.FilterSpec("event_type", "d.event_type"),
    listing.FilterSpec("event_id", "d.event_id", cast="uuid"),
    listing.FilterSpec("created_from", "d.created_at", op=">=", cast="timestamptz"),
    listing.FilterSpec("created_to", "d.created_at", op="<", cast="timestamptz"),
    listing.FilterSpec("dead_from", "d.dead_at", op=">=", cast="timestamptz"),
    listing.FilterSpec("dead_to", "d.dead_at", op="<", cast="timestamptz"),
)
DELIVERY_SORTS = (
    listing.SortSpec("id", "d.id", "d.id", "bigint"),
    listing.SortSpec("created_at", "d.created_at", "d.id", "timestamptz"),
    listing.SortSpec("updated_at", "d.updated_at", "d.id", "timestamptz"),
    listing.SortSpec("next_attempt_at", "d.next_attempt_at", "d.id", "timestamptz"),
)
FAILED_SORTS = (
    listing.SortSpec("dead_at", "d.dead_at", "d.id", "timestamptz"),
    listing.SortSpec("id", "d.id", "d.id", "bigint"),
)


class _StatsRaw(msgspec.Struct, kw_only=True):
    key: int | None = None
    total: int
    delivered: int
    dead: int
    in_progress: int
    retried: int
    attempted: int
    attempt_count: int
    attempt_latency_ms: list[float] | None
    end_to_end_ms: list[float] | None


def _pct(values: Sequence[float | None] | None) -> Percentiles:
    v: list[float | None] = list(values or [None, None, None, None])
    return Percentiles(
        p50=None if v[0] is None else round(v[0], 3),
        p90=None if v[1] is None else round(v[1], 3),
        p95=None if v[2] is None else round(v[2], 3),
        p99=None if v[3] is None else round(v[3], 3),
    )


def _stats(raw: _StatsRaw) -> DeliveryStatsRow:
    finished = raw.delivered + raw.dead
    return DeliveryStatsRow(
        key=raw.key,
        total=raw.total,
        delivered=raw.delivered,
        dead=raw.dead,
        in_progress=raw.in_progress,
        success_rate=None if finished == 0 else round(raw.delivered / finished, 6),
        retry_rate=None if raw.attempted == 0 else round(raw.retried / raw.attempted, 6),
        attempt_count=raw.attempt_count,
        attempt_latency_ms=_pct(raw.attempt_latency_ms),
        end_to_end_ms=_pct(raw.end_to_end_ms),
    )


class DeliveryRepository:
    def __init__(self) -> None:
        q = load_queries(__package__ or "api.deliveries", "queries.sql")
        self._q = q
        self._cols = sql.SQL(q["delivery_columns"])
        self._get = sql.SQL(q["get_delivery"]).format(columns=self._cols)
        self._lock = sql.SQL(q["lock_delivery"]).format(columns=self._cols)
        self.listing = listing.Listing(
            q["list_deliveries"],
            Delivery,
            DELIVERY_FILTERS,
            DELIVERY_SORTS,
            tenant_column="d.consumer_id",
            fragments={"columns": self._cols},
        )
        self.dead_letters = listing.Listing(
            q["list_deliveries"],
            Delivery,
            DELIVERY_FILTERS,
            FAILED_SORTS,
            tenant_column="d.consumer_id",
            fixed=[("d.status", "dead")],
            fragments={"columns": self._cols},
        )

    async def get(
        self, conn: AsyncConnection[Any], *, tenant: int | None, delivery_id: int
    ) -> DeliveryDetail | None:
        detail = await fetch_one(conn, self._get, {"id": delivery_id, "tenant": tenant}, DeliveryDetail)
        if detail is None:
            return None
        detail.attempt_log = await fetch_all(
            conn, self._q["delivery_attempts"], {"id": delivery_id}, DeliveryAttempt
        )
        return detail

    async def lock(
        self, conn: AsyncConnection[Any], *, tenant: int | None, delivery_id: int
    ) -> Delivery | None:
        return await fetch_one(conn, self._lock, {"id": delivery_id, "tenant": tenant}, Delivery)

    async def retry(self, conn: AsyncConnection[Any], delivery_id: int) -> bool:
        return bool(await fetch_value(conn, self._q["retry_one"], {"id": delivery_id}))

    async def webhook_deleted(self, conn: AsyncConnection[Any], delivery_id: int) -> bool:
        return bool(await fetch_value(conn, self._q["webhook_deleted"], {"id": delivery_id}))

    async def ack(self, conn: AsyncConnection[Any], delivery_id: int) -> bool:
        return bool(await fetch_value(conn, self._q["ack_one"], {"id": delivery_id}))

    async def bulk_count(
        self, conn: AsyncConnection[Any], *, tenant: int | None, filters: Mapping[str, Any]
    ) -> int:
        plan = self.listing.plan(tenant=tenant, filters=filters, sort="id", cursor=None)
        query = sql.SQL(self._q["bulk_count"]).format(where=plan.where)
        return int(await fetch_value(conn, query, plan.params))

    async def bulk_skipped(
        self, conn: AsyncConnection[Any], *, tenant: int | None, filters: Mapping[str, Any]
    ) -> int:
        """Matching deliveries that are never re-queued because their webhook was deleted."""
        plan = self.listing.plan(tenant=tenant, filters=filters, sort="id", cursor=None)
        query = sql.SQL(self._q["bulk_skipped"]).format(where=plan.where)
        return int(await fetch_value(conn, query, plan.params))

    async def purge_count(
        self, conn: AsyncConnection[Any], *, tenant: int | None, filters: Mapping[str, Any]
    ) -> int:
        plan = self.listing.plan(tenant=tenant, filters=filters, sort="id", cursor=None)
        query = sql.SQL(self._q["purge_count"]).format(where=plan.where)
        return int(await fetch_value(conn, query, plan.params))

    async def purge(
        self, conn: AsyncConnection[Any], *, tenant: int | None, filters: Mapping[str, Any], limit: int
    ) -> list[int]:
        """Delete up to ``limit`` matching dead letters (``whk.purge_dead_deliveries``): the ids deleted."""
        plan = self.listing.plan(tenant=tenant, filters=filters, sort="id", cursor=None)
        query = sql.SQL(self._q["purge_candidates"]).format(where=plan.where)
        ids = [int(i) for i in await fetch_column(conn, query, {**plan.params, "limit": limit})]
        return await self.purge_ids(conn, ids)

    async def purge_ids(self, conn: AsyncConnection[Any], ids: list[int]) -> list[int]:
        if not ids:
            return []
        return [int(i) for i in await fetch_column(conn, self._q["purge_many"], {"ids": ids})]

    async def stats(
        self,
        conn: AsyncConnection[Any],
        *,
        tenant: int | None,
        since: datetime,
        until: datetime,
        webhook_id: int | None,
        top: int,
    ) -> tuple[DeliveryStatsRow, list[DeliveryStatsRow], list[DeliveryStatsRow]]:
        params = {"tenant": tenant, "since": since, "until": until, "webhook_id": webhook_id, "limit": top}
        overall = await fetch_one(conn, self._q["stats_overall"], params, _StatsRaw)
        assert overall is not None
        grouped = self._q["stats_grouped"]
        per_webhook = await fetch_all(
            conn, sql.SQL(grouped).format(group=sql.SQL("d.webhook_id")), params, _StatsRaw
        )
        per_consumer = await fetch_all(
            conn, sql.SQL(grouped).format(group=sql.SQL("d.consumer_id")), params, _StatsRaw
        )
        return _stats(overall), [_stats(r) for r in per_webhook], [_stats(r) for r in per_consumer]
