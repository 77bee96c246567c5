"""Alert actions shared by the API (``POST /monitoring/alerts/{id}/acknowledge`` and ``/silence``) and the
dashboard's alerts page: one code path, so both check tenancy and state the same way and write the same
audit row (``alert.acknowledge``, ``alert.silence``)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from api.audit import AuditLog
from api.deps import Principal
from api.errors import Conflict, NotFound
from api.monitoring.repository import MonitoringRepository
from api.monitoring.schemas import AlertRow

__all__ = ["acknowledge_alert", "silence_alert"]


async def _row(
    conn: AsyncConnection[Any], repo: MonitoringRepository, alert_id: int, tenant: int | None
) -> AlertRow:
    row = await repo.get_alert(conn, alert_id, tenant)
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return row


async def acknowledge_alert(
    conn: AsyncConnection[Any],
    principal: Principal,
    repo: MonitoringRepository,
    audit_log: AuditLog,
    alert_id: int,
) -> None:
    """Acknowledge a firing, unacknowledged alert (404 for another tenant's, 409 in any other state)."""
    old = await _row(conn, repo, alert_id, principal.tenant_filter())
    async with conn.transaction():
        history_id = await repo.acknowledge(conn, alert_id, principal.actor)
        if history_id is None:
            raise Conflict(f"alert {alert_id} is {old.state}, not firing unacknowledged")
        await audit_log.record(
            conn, principal, "alert.acknowledge", "alert", alert_id, None, None, consumer_id=old.consumer_id
        )


async def silence_alert(
    conn: AsyncConnection[Any],
    principal: Principal,
    repo: MonitoringRepository,
    audit_log: AuditLog,
    alert_id: int,
    duration_s: int,
) -> None:
    """Silence an alert's notifications for ``duration_s`` seconds (0 lifts the silence); the caller has
    bounded ``duration_s`` (``api.monitoring.schemas.Silence``)."""
    old = await _row(conn, repo, alert_id, principal.tenant_filter())
    async with conn.transaction():
        await repo.silence(conn, alert_id, duration_s)
        await audit_log.record(
            conn,
            principal,
            "alert.silence",
            "alert",
            alert_id,
            None,
            {"duration_s": duration_s},
            consumer_id=old.consumer_id,
        )
