"""Every number the dashboard shows, and every change it makes, goes through ``DashboardData``.

One module on purpose: the dashboard reads the same tables (and, for lists and details, the very same
repository queries) as the API, with the same tenancy — ``tenant`` is ``Principal.tenant_filter()``:
None for an admin, else the consumer id, and another tenant's row is simply not found (a 404 page).
Where a KPI view (``whk.kpi_*``, the numbers the alerts evaluate) gives the same figure at the same cost
it is read here (the webhook list, the platform health, the SLOs); docs/dashboard.md says which figures
keep their own query, and why.

Its own queries (``queries.sql`` next to it) are index-driven: time-bounded ranges on indexed timestamps
and partial indexes of open work, so a page costs the same with 10 thousand or 1 million deliveries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection

from api.bulkretries.repository import BulkRetryRepository
from api.bulkretries.schemas import BulkRetry
from api.deliveries.repository import DeliveryRepository
from api.deliveries.schemas import Delivery, DeliveryDetail
from api.events.repository import EventRepository
from api.events.schemas import EventType
from api.monitoring.repository import MonitoringRepository
from api.monitoring.schemas import Slo
from api.rows import fetch_all, fetch_column, fetch_one, fetch_value
from api.webhooks.repository import WebhookRepository
from api.webhooks.schemas import Webhook
from whk.sqlfiles import load_queries

__all__ = [
    "WINDOWS",
    "Backlog",
    "DashboardData",
    "KeyRow",
    "Overview",
    "Window",
]

Window = Literal["1h", "24h", "7d"]
# window -> (length, chart bucket)
WINDOWS: Mapping[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=1)),
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
    "7d": (timedelta(days=7), timedelta(hours=1)),
}


class KeyRow(msgspec.Struct, kw_only=True):
    id: int
    prefix: str
    consumer_id: int | None
    is_admin: bool
    scopes: list[str]
    revoked: bool
    expired: bool
    consumer_status: str | None
    allowed_ips: list[str] | None


class Point(msgspec.Struct, kw_only=True):
    t: int
    events_in: int
    delivered: int
    failed: int


class AttemptSummary(msgspec.Struct, kw_only=True):
    attempts: int
    succeeded: int
    commit_to_delivery_ms: list[float] | None

    @property
    def success_rate(self) -> float | None:
        return None if self.attempts == 0 else self.succeeded / self.attempts

    def latency(self, i: int) -> float | None:
        values = self.commit_to_delivery_ms
        return None if not values or values[i] is None else float(values[i])


class Backlog(msgspec.Struct, kw_only=True):
    pending: int
    in_flight: int
    awaiting_ack: int
    parked: int
    oldest_pending_s: float | None
    unrouted: int
    dead_24h: int


class WorstWebhook(msgspec.Struct, kw_only=True):
    id: int
    name: str
    url: str
    status: str
    breaker_state: str
    attempts: int
    failed: int


class FiringAlert(msgspec.Struct, kw_only=True):
    id: int
    name: str
    severity: str
    state: str
    last_triggered_at: datetime | None
    consumer_id: int | None


class DispatcherRow(msgspec.Struct, kw_only=True):
    id: str
    hostname: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    idle: bool
    stopping: bool
    heartbeat_age_s: float


class ScheduleRow(msgspec.Struct, kw_only=True):
    entrypoint: str
    period_s: int
    last_run: datetime
    ok: bool | None
    late: bool


class PlatformKpi(msgspec.Struct, kw_only=True):
    """whk.kpi_platform: the figures the platform-wide alerts evaluate."""

    oldest_unrouted_age_s: float | None
    webhooks_disabled: int
    breakers_open: int


class Health(msgspec.Struct, kw_only=True):
    database_ms: float
    dispatchers: list[DispatcherRow]
    dispatchers_alive: int
    schedules: list[ScheduleRow]
    platform: PlatformKpi


class Overview(msgspec.Struct, kw_only=True):
    window: str
    since: datetime
    until: datetime
    bucket_s: int
    series: list[Point]
    summary: AttemptSummary
    backlog: Backlog
    worst: list[WorstWebhook]
    alerts: list[FiringAlert]
    health: Health | None  # platform-wide: admins only


class WebhookRow(msgspec.Struct, kw_only=True):
    """A webhook with its KPIs (whk.kpi_webhook_state, whk.kpi_webhook_window_at over the last day)."""

    id: int
    consumer_id: int
    name: str
    url: str
    status: str
    disabled_reason: str | None
    breaker_state: str
    consecutive_failures: int
    oldest_pending_age_s: float | None
    backlog: int
    attempts: int
    failures: int  # the breaker's failure kinds (retry, throttle, blocked), as in the alerts' failure_rate
    latency_p95_ms: float | None

    @property
    def success_rate(self) -> float | None:
        return None if self.attempts == 0 else 1 - self.failures / self.attempts


class DeadGroup(msgspec.Struct, kw_only=True):
    webhook_id: int
    webhook_name: str
    reason: str
    n: int
    last_dead_at: datetime
    last_id: int


class TailRow(msgspec.Struct, kw_only=True):
    id: int
    event_id: Any
    event_type: str
    created_at: datetime
    status: str
    webhook_id: int | None


class HeatCell(msgspec.Struct, kw_only=True):
    event_type: str
    dow: int
    hour: int
    n: int


class ConsumerGrowth(msgspec.Struct, kw_only=True):
    consumer_id: int
    name: str
    this_week: int
    last_week: int

    @property
    def growth(self) -> float | None:
        return None if self.last_week == 0 else (self.this_week - self.last_week) / self.last_week


class AlertRow(msgspec.Struct, kw_only=True):
    id: int
    consumer_id: int | None
    name: str
    severity: str
    condition: dict[str, Any]
    enabled: bool
    state: str
    last_triggered_at: datetime | None
    trigger_count: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None
    silenced: bool


class AlertEvent(msgspec.Struct, kw_only=True):
    id: int
    alert_id: int
    name: str
    severity: str | None
    triggered_at: datetime
    resolved_at: datetime | None
    value: float | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    test: bool


class DashboardData:
    """The dashboard's data access (see the module docstring). One instance per app."""

    def __init__(self) -> None:
        self._q = load_queries(__package__ or "api.dashboard", "queries.sql")
        self.deliveries = DeliveryRepository()
        self.bulk_retries = BulkRetryRepository()
        self.webhooks = WebhookRepository()
        self.events = EventRepository()
        self.monitoring = MonitoringRepository()  # the alert actions and SLOs of /monitoring

    # ----- sessions
    async def key(self, conn: AsyncConnection[Any], key_id: int) -> KeyRow | None:
        return await fetch_one(conn, self._q["key_by_id"], {"id": key_id}, KeyRow)

    @staticmethod
    async def _no_jit(conn: AsyncConnection[Any]) -> None:
        """JIT compilation costs hundreds of milliseconds and these small, index-bound reads never repay
        it (measured: 513 ms of JIT for a 2 ms query). For the request's transaction only."""
        await conn.execute("SET LOCAL jit = off")

    async def _scope(self, conn: AsyncConnection[Any], tenant: int | None) -> dict[str, Any]:
        """Tenant parameters: the tenant and its webhook ids (attempt and backlog rows carry webhook_id,
        whose indexes serve a tenant better than a join back to the delivery); no tenant, no list (every
        webhook: whk.window_attempts reads NULL so)."""
        if tenant is None:
            return {"tenant": None, "webhooks": None}
        hooks = await fetch_column(conn, self._q["tenant_webhooks"], {"tenant": tenant})
        return {"tenant": tenant, "webhooks": [int(h) for h in hooks]}

    # ----- overview
    async def overview(
        self, conn: AsyncConnection[Any], tenant: int | None, window: str, *, now: datetime | None = None
    ) -> Overview:
        length, bucket = WINDOWS[window]
        until = now or datetime.now(UTC)
        since = until - length
        await self._no_jit(conn)
        scope = await self._scope(conn, tenant)
        span = {**scope, "since": since, "until": until}
        series = await fetch_all(conn, self._q["series"], {**span, "bucket": bucket}, Point)
        summary = await fetch_one(conn, self._q["attempt_summary"], span, AttemptSummary)
        assert summary is not None
        backlog = await self.backlog(conn, tenant, scope=scope, now=until)
        worst = await fetch_all(conn, self._q["worst_webhooks"], {**span, "limit": 5}, WorstWebhook)
        alerts = await fetch_all(conn, self._q["firing_alerts"], {"tenant": tenant}, FiringAlert)
        return Overview(
            window=window,
            since=since,
            until=until,
            bucket_s=int(bucket.total_seconds()),
            series=series,
            summary=summary,
            backlog=backlog,
            worst=worst,
            alerts=alerts,
            health=None,
        )

    async def backlog(
        self,
        conn: AsyncConnection[Any],
        tenant: int | None,
        *,
        scope: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Backlog:
        if scope is None:
            await self._no_jit(conn)
        params = scope if scope is not None else await self._scope(conn, tenant)
        dead_since = (now or datetime.now(UTC)) - timedelta(hours=24)
        row = await fetch_one(conn, self._q["backlog"], {**params, "dead_since": dead_since}, Backlog)
        assert row is not None
        return row

    async def health(self, conn: AsyncConnection[Any], lease_s: float) -> Health:
        started = time.perf_counter()
        await fetch_value(conn, "SELECT 1", {})
        db_ms = (time.perf_counter() - started) * 1000
        dispatchers = await fetch_all(conn, self._q["dispatchers"], {}, DispatcherRow)
        schedules = await fetch_all(conn, self._q["schedules"], {}, ScheduleRow)
        platform = await fetch_one(conn, self._q["platform"], {}, PlatformKpi)
        assert platform is not None
        alive = sum(1 for d in dispatchers if d.heartbeat_age_s <= lease_s and not d.stopping)
        return Health(
            database_ms=round(db_ms, 2),
            dispatchers=dispatchers,
            dispatchers_alive=alive,
            schedules=schedules,
            platform=platform,
        )

    async def firing_alerts(self, conn: AsyncConnection[Any], tenant: int | None) -> list[FiringAlert]:
        return await fetch_all(conn, self._q["firing_alerts"], {"tenant": tenant}, FiringAlert)

    # ----- webhooks
    async def webhook_rows(
        self, conn: AsyncConnection[Any], tenant: int | None, *, after_id: int | None, limit: int
    ) -> list[WebhookRow]:
        params = {"tenant": tenant, "after_id": after_id, "limit": limit}
        return await fetch_all(conn, self._q["webhook_rows"], params, WebhookRow)

    async def webhook(
        self, conn: AsyncConnection[Any], tenant: int | None, webhook_id: int
    ) -> Webhook | None:
        """The API's own read (same query, same tenancy)."""
        return await self.webhooks.get(conn, tenant=tenant, webhook_id=webhook_id)

    async def webhook_series(
        self, conn: AsyncConnection[Any], tenant: int | None, webhook_id: int, window: str
    ) -> list[Point]:
        length, bucket = WINDOWS[window]
        until = datetime.now(UTC)
        params = {
            "tenant": -1 if tenant is None else tenant,  # a tenant-shaped scope: this one webhook
            "webhooks": [webhook_id],
            "since": until - length,
            "until": until,
            "bucket": bucket,
        }
        return await fetch_all(conn, self._q["series"], params, Point)

    async def lock_webhook(
        self, conn: AsyncConnection[Any], tenant: int | None, webhook_id: int
    ) -> Webhook | None:
        return await self.webhooks.get(conn, tenant=tenant, webhook_id=webhook_id, lock=True)

    async def set_webhook_status(self, conn: AsyncConnection[Any], webhook_id: int, status: str) -> int:
        return await self.webhooks.set_status(conn, webhook_id, status)

    # ----- deliveries
    async def delivery_page(
        self,
        conn: AsyncConnection[Any],
        tenant: int | None,
        filters: Mapping[str, Any],
        *,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Delivery], str | None]:
        """The API's list (``GET /deliveries``): same allow-listed filters, same keyset cursor."""
        return await self.deliveries.listing.page(
            conn, tenant=tenant, filters=filters, sort="-id", cursor=cursor, limit=limit
        )

    async def delivery(
        self, conn: AsyncConnection[Any], tenant: int | None, delivery_id: int
    ) -> DeliveryDetail | None:
        return await self.deliveries.get(conn, tenant=tenant, delivery_id=delivery_id)

    async def lock_delivery(
        self, conn: AsyncConnection[Any], tenant: int | None, delivery_id: int
    ) -> Delivery | None:
        return await self.deliveries.lock(conn, tenant=tenant, delivery_id=delivery_id)

    async def retry_delivery(self, conn: AsyncConnection[Any], delivery_id: int) -> bool:
        return await self.deliveries.retry(conn, delivery_id)

    # ----- dead letters
    async def dead_groups(
        self, conn: AsyncConnection[Any], tenant: int | None, since: datetime
    ) -> list[DeadGroup]:
        return await fetch_all(conn, self._q["dead_groups"], {"tenant": tenant, "since": since}, DeadGroup)

    # "Retry all" is the API's bulk retry (POST /deliveries/bulk-retry): the same filters, counted by the
    # same dry-run query, worked through by the job worker (pgqueuer entrypoint ``bulk_retry``).
    async def bulk_retry_count(
        self, conn: AsyncConnection[Any], tenant: int | None, filters: Mapping[str, Any]
    ) -> int:
        return await self.deliveries.bulk_count(conn, tenant=tenant, filters=filters)

    async def bulk_retry_skipped(
        self, conn: AsyncConnection[Any], tenant: int | None, filters: Mapping[str, Any]
    ) -> int:
        return await self.deliveries.bulk_skipped(conn, tenant=tenant, filters=filters)

    async def start_bulk_retry(
        self, conn: AsyncConnection[Any], tenant: int | None, filters: Mapping[str, Any], actor: str
    ) -> BulkRetry:
        return await self.bulk_retries.start(conn, tenant=tenant, filters=dict(filters), actor=actor)

    async def bulk_retry(
        self, conn: AsyncConnection[Any], tenant: int | None, bulk_id: int
    ) -> BulkRetry | None:
        return await self.bulk_retries.get(conn, tenant=tenant, bulk_id=bulk_id)

    # ----- events and usage
    async def event_types(self, conn: AsyncConnection[Any], limit: int = 200) -> list[EventType]:
        items, _ = await self.events.types.page(
            conn, tenant=None, filters={}, sort="name", cursor=None, limit=limit
        )
        return items

    async def tail(self, conn: AsyncConnection[Any], tenant: int | None, *, limit: int = 50) -> list[TailRow]:
        since = datetime.now(UTC) - timedelta(hours=24)
        return await fetch_all(
            conn, self._q["tail"], {"tenant": tenant, "since": since, "limit": limit}, TailRow
        )

    async def heatmap(self, conn: AsyncConnection[Any], tenant: int | None, days: int) -> list[HeatCell]:
        since = datetime.now(UTC) - timedelta(days=days)
        return await fetch_all(conn, self._q["heatmap"], {"tenant": tenant, "since": since}, HeatCell)

    async def top_consumers(self, conn: AsyncConnection[Any], tenant: int | None) -> list[ConsumerGrowth]:
        now = datetime.now(UTC)
        params = {"tenant": tenant, "week": now - timedelta(days=7), "since": now - timedelta(days=14)}
        return await fetch_all(conn, self._q["top_consumers"], params, ConsumerGrowth)

    # ----- alerts
    async def alerts(self, conn: AsyncConnection[Any], tenant: int | None) -> list[AlertRow]:
        return await fetch_all(conn, self._q["alerts"], {"tenant": tenant}, AlertRow)

    async def alert_history(self, conn: AsyncConnection[Any], tenant: int | None) -> list[AlertEvent]:
        return await fetch_all(conn, self._q["alert_history"], {"tenant": tenant}, AlertEvent)

    async def slos(self, conn: AsyncConnection[Any], tenant: int | None) -> list[Slo]:
        """``GET /monitoring/slos``' read: whk.kpi_slo with the same tenancy."""
        return await self.monitoring.slos(conn, tenant, None)


def heat_grid(cells: Sequence[HeatCell]) -> dict[str, list[list[int]]]:
    """Per event type, a 7 x 24 grid (ISO weekday 1..7 x hour 0..23) of counts."""
    grid: dict[str, list[list[int]]] = {}
    for c in cells:
        rows = grid.setdefault(c.event_type, [[0] * 24 for _ in range(7)])
        rows[c.dow - 1][c.hour] = c.n
    return grid
