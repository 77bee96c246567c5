"""Monitoring reads and alert writes (blocks in queries.sql)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.monitoring.schemas import (
    AlertActivation,
    AlertChannel,
    AlertCreate,
    AlertRow,
    AttemptWindow,
    ChannelInfo,
    DeadLetter,
    DispatcherInfo,
    EmailChannel,
    FailingWebhook,
    PagerDutyChannel,
    SchedulerInfo,
    SlackChannel,
    Slo,
    SloCreate,
    SloPoint,
    StatusCount,
    SupervisedProcess,
    WebhookChannel,
)
from api.rows import execute, fetch_all, fetch_one, fetch_value
from whk.alertchannels import acreate_channel, mask
from whk.notice import Notice, encode_notice
from whk.secretbox import SecretBox
from whk.signing import generate_secret
from whk.sqlfiles import load_queries

__all__ = ["HealthRow", "MonitoringRepository"]


class HealthRow(msgspec.Struct, kw_only=True):
    schema_version: int
    oldest_unrouted_age_s: float | None
    oldest_due_delivery_age_s: float | None
    oldest_pending_warn_s: float | None
    quarantined_count: int = 0
    quarantined_webhooks: list[int] = msgspec.field(default_factory=list)
    needs_secret_count: int = 0
    needs_secret_webhooks: list[int] = msgspec.field(default_factory=list)
    needs_secret_oldest_s: float | None = None


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
        breaching_only: bool = False,
    ) -> list[AlertRow]:
        params = {
            "tenant": tenant,
            "state": state,
            "enabled": enabled,
            "after_id": after_id,
            "limit": limit,
            "breaching_only": breaching_only,
        }
        return await fetch_all(conn, self._q["list_alerts"], params, AlertRow)

    async def get_alert(
        self, conn: AsyncConnection[Any], alert_id: int, tenant: int | None
    ) -> AlertRow | None:
        return await fetch_one(conn, self._q["get_alert"], {"id": alert_id, "tenant": tenant}, AlertRow)

    async def create_channels(
        self,
        conn: AsyncConnection[Any],
        box: SecretBox,
        consumer_id: int | None,
        channels: list[AlertChannel],
    ) -> list[ChannelInfo]:
        """Store each channel encrypted; the generated secret of a webhook channel is returned once."""
        out: list[ChannelInfo] = []
        for ch in channels:
            secret: str | None = None
            config: dict[str, Any] = {}
            generated: str | None = None
            if isinstance(ch, WebhookChannel):
                secret = ch.secret or generate_secret()
                generated = None if ch.secret else secret
            elif isinstance(ch, EmailChannel):
                secret = ch.smtp_password
                config = {
                    "smtp_host": ch.smtp_host,
                    "smtp_port": ch.smtp_port,
                    "smtp_username": ch.smtp_username,
                    "smtp_from": ch.smtp_from,
                    "starttls": ch.starttls,
                }
            kind = {
                WebhookChannel: "webhook",
                SlackChannel: "slack",
                EmailChannel: "email",
                PagerDutyChannel: "pagerduty",
            }[type(ch)]
            channel_id = await acreate_channel(
                conn, box, consumer_id=consumer_id, kind=kind, target=ch.target, secret=secret, config=config
            )
            out.append(ChannelInfo(id=channel_id, type=kind, display=mask(kind, ch.target), secret=generated))
        return out

    async def channel_infos(self, conn: AsyncConnection[Any], ids: list[int]) -> dict[int, ChannelInfo]:
        rows = await fetch_all(conn, self._q["channels_by_id"], {"ids": ids}, ChannelInfo)
        return {r.id: r for r in rows}

    async def save_alert(
        self,
        conn: AsyncConnection[Any],
        consumer_id: int | None,
        data: AlertCreate,
        channels: list[ChannelInfo],
        steps: list[list[ChannelInfo]],
        alert_id: int | None = None,
    ) -> int:
        params: dict[str, Any] = {
            "id": alert_id,
            "consumer_id": consumer_id,
            "name": data.name,
            "description": data.description,
            "severity": data.severity,
            "condition": Jsonb(msgspec.to_builtins(data.condition)),
            "channels": Jsonb([{"channel_id": c.id} for c in channels]),
            "escalation": Jsonb(
                [
                    {"after_s": s.after_s, "channels": [{"channel_id": c.id} for c in chs]}
                    for s, chs in zip(data.escalation, steps, strict=True)
                ]
            ),
            "throttle_seconds": data.throttle_seconds,
            "for_s": data.for_s,
            "enabled": data.enabled,
        }
        if alert_id is None:
            return int(await fetch_value(conn, self._q["insert_alert"], params))
        await execute(conn, self._q["update_alert"], params)
        return alert_id

    async def delete_alert(self, conn: AsyncConnection[Any], alert_id: int) -> None:
        await execute(conn, self._q["delete_alert"], {"id": alert_id})

    async def delete_channels(self, conn: AsyncConnection[Any], ids: list[int], keep: list[int]) -> None:
        await execute(conn, self._q["delete_channels"], {"ids": ids, "keep": keep})

    async def now(self, conn: AsyncConnection[Any]) -> datetime:
        value: datetime = await fetch_value(conn, self._q["now"], {})
        return value

    async def paged_channels(self, conn: AsyncConnection[Any], alert_id: int) -> list[int]:
        """The channels a firing rule has paged in its open activation (empty unless firing)."""
        value = await fetch_value(conn, self._q["paged_channels"], {"id": alert_id})
        return [int(v) for v in value or []]

    async def acknowledge(self, conn: AsyncConnection[Any], alert_id: int, by: str) -> int | None:
        value = await fetch_value(conn, self._q["acknowledge"], {"id": alert_id, "by": by})
        return None if value is None else int(value)

    async def silence(self, conn: AsyncConnection[Any], alert_id: int, duration_s: int) -> None:
        await execute(conn, self._q["silence"], {"id": alert_id, "duration_s": duration_s})

    async def history(
        self, conn: AsyncConnection[Any], alert_id: int, after_id: int | None, limit: int
    ) -> list[AlertActivation]:
        params = {"id": alert_id, "after_id": after_id, "limit": limit}
        return await fetch_all(conn, self._q["history"], params, AlertActivation)

    async def open_test_activation(self, conn: AsyncConnection[Any], alert_id: int) -> tuple[int, datetime]:
        async with conn.cursor() as cur:
            await cur.execute(self._q["open_test_activation"], {"id": alert_id})
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), row[1]

    async def enqueue_notice(self, conn: AsyncConnection[Any], notice: Notice) -> None:
        await fetch_value(
            conn,
            self._q["enqueue_notice"],
            {"payload": encode_notice(notice), "dedupe_key": notice.dedupe_key},
        )

    async def schedulers(self, conn: AsyncConnection[Any]) -> list[SchedulerInfo]:
        return await fetch_all(conn, self._q["schedulers"], {}, SchedulerInfo)

    async def create_slo(self, conn: AsyncConnection[Any], consumer_id: int | None, data: SloCreate) -> int:
        params = {
            "consumer_id": consumer_id,
            "webhook_id": data.webhook_id,
            "name": data.name,
            "objective": data.objective,
            "window_days": data.window_days,
        }
        return int(await fetch_value(conn, self._q["insert_slo"], params))

    async def slos(self, conn: AsyncConnection[Any], tenant: int | None, slo_id: int | None) -> list[Slo]:
        return await fetch_all(conn, self._q["list_slos"], {"tenant": tenant, "id": slo_id}, Slo)

    async def slo_history(self, conn: AsyncConnection[Any], slo_id: int) -> list[SloPoint]:
        return await fetch_all(conn, self._q["slo_history"], {"id": slo_id}, SloPoint)

    async def webhook_owner(self, conn: AsyncConnection[Any], webhook_id: int) -> int | None:
        value = await fetch_value(conn, self._q["webhook_owner"], {"id": webhook_id})
        return None if value is None else int(value)
