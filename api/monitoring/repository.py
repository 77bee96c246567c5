"""Monitoring reads and alert writes (blocks in queries.sql)."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.monitoring.schemas import (
    Alert,
    AlertCondition,
    AlertCreate,
    AttemptWindow,
    DeadLetter,
    DispatcherInfo,
    FailingWebhook,
    StatusCount,
    SupervisedProcess,
)
from api.rows import fetch_all, fetch_one, fetch_value
from whk.sqlfiles import load_queries

__all__ = ["HealthRow", "MonitoringRepository"]


class HealthRow(msgspec.Struct, kw_only=True):
    schema_version: int
    oldest_unrouted_age_s: float | None
    oldest_due_delivery_age_s: float | None
    oldest_pending_warn_s: float | None
    quarantined_count: int = 0
    quarantined_webhooks: list[int] = msgspec.field(default_factory=list)


class MonitoringRepository:
    def __init__(self) -> None:
        self._q = load_queries(__package__ or "api.monitoring", "queries.sql")

    async def health(self, conn: AsyncConnection[Any]) -> HealthRow:
        row = await fetch_one(conn, self._q["health"], {}, HealthRow)
        assert row is not None
        return row

    async def dispatchers(self, conn: AsyncConnection[Any]) -> list[DispatcherInfo]:
        return await fetch_all(conn, self._q["dispatchers"], {}, DispatcherInfo)

    async def supervised(self, conn: AsyncConnection[Any], fresh_s: float) -> list[SupervisedProcess]:
        return await fetch_all(conn, self._q["supervised"], {"fresh_s": fresh_s}, SupervisedProcess)

    async def counts(self, conn: AsyncConnection[Any], name: str, tenant: int | None) -> dict[str, int]:
        rows = await fetch_all(conn, self._q[name], {"tenant": tenant}, StatusCount)
        return {r.status: r.n for r in rows}

    async def outbox_pending(self, conn: AsyncConnection[Any]) -> int:
        return int(await fetch_value(conn, self._q["outbox_pending"], {}))

    async def attempts(
        self, conn: AsyncConnection[Any], tenant: int | None, window_s: int
    ) -> list[AttemptWindow]:
        return await fetch_all(
            conn, self._q["recent_attempts"], {"tenant": tenant, "window_s": window_s}, AttemptWindow
        )

    async def top_failing(self, conn: AsyncConnection[Any], tenant: int | None) -> list[FailingWebhook]:
        return await fetch_all(conn, self._q["top_failing"], {"tenant": tenant}, FailingWebhook)

    async def recent_dead(self, conn: AsyncConnection[Any], tenant: int | None) -> list[DeadLetter]:
        return await fetch_all(conn, self._q["recent_dead"], {"tenant": tenant}, DeadLetter)

    async def alerts(
        self,
        conn: AsyncConnection[Any],
        *,
        tenant: int | None,
        state: str | None,
        enabled: bool | None,
        after_id: int | None,
        limit: int,
    ) -> list[Alert]:
        params = {"tenant": tenant, "state": state, "enabled": enabled, "after_id": after_id, "limit": limit}
        return await fetch_all(conn, self._q["list_alerts"], params, Alert)

    async def get_alert(self, conn: AsyncConnection[Any], alert_id: int) -> Alert | None:
        return await fetch_one(conn, self._q["get_alert"], {"id": alert_id}, Alert)

    async def create_alert(
        self, conn: AsyncConnection[Any], consumer_id: int | None, data: AlertCreate
    ) -> int:
        params = {
            "consumer_id": consumer_id,
            "name": data.name,
            "description": data.description,
            "severity": data.severity,
            "condition": msgspec.to_builtins(data.condition),
            "channels": msgspec.to_builtins(data.channels),
            "escalation": msgspec.to_builtins(data.escalation),
            "throttle_seconds": data.throttle_seconds,
            "enabled": data.enabled,
        }
        params = {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in params.items()}
        return int(await fetch_value(conn, self._q["insert_alert"], params))

    async def metric_value(
        self, conn: AsyncConnection[Any], consumer_id: int | None, cond: AlertCondition
    ) -> float | None:
        value = await fetch_value(
            conn,
            self._q["alert_metric"],
            {
                "metric": cond.metric,
                "window_s": cond.window_s,
                "consumer_id": consumer_id,
                "webhook_id": cond.webhook_id,
            },
        )
        return None if value is None else float(value)

    async def webhook_owner(self, conn: AsyncConnection[Any], webhook_id: int) -> int | None:
        value = await fetch_value(conn, self._q["webhook_owner"], {"id": webhook_id})
        return None if value is None else int(value)
