"""Replays: ``POST /api/whk/webhooks/{id}/replay`` (dry run counts), ``GET /api/whk/replays/{id}`` (progress)
and ``POST /api/whk/replays/{id}/cancel``. The job worker does the sending (pgqueuer entrypoint ``replay``);
the state lives in ``whk.replays`` and changes only through the ``whk.replay_*`` SQL functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.deps import Principal
from api.errors import Conflict, NotFound, Unprocessable
from api.replays.schemas import Replay, ReplayRequest, ReplayResult
from api.rows import fetch_one, fetch_value
from api.shapes import IdPath
from api.webhooks.repository import WebhookRepository
from whk.sqlfiles import load_queries

__all__ = ["ReplayController"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]


class ReplayController(Controller):
    path = "/api/whk"
    tags = ["replays"]  # noqa: RUF012

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self._q = load_queries(__package__ or "api.replays", "queries.sql")
        self.webhooks = WebhookRepository()
        self.audit_log = AuditLog()

    async def _get(self, conn: AsyncConnection[Any], principal: Principal, replay_id: int) -> Replay:
        row = await fetch_one(
            conn, self._q["get_replay"], {"id": replay_id, "tenant": principal.tenant_filter()}, Replay
        )
        if row is None:
            raise NotFound(f"replay {replay_id} not found")
        return row

    async def _check(self, conn: AsyncConnection[Any], data: ReplayRequest, until: datetime) -> None:
        errors: list[dict[str, str]] = []
        horizon = await fetch_value(conn, self._q["horizon"], {})
        if data.since < horizon:
            errors.append(
                {
                    "pointer": "/since",
                    "message": f"before the outbox retention horizon {horizon.isoformat()}: "
                    "those events may be gone (retention.outbox_days)",
                }
            )
        if data.since >= until:
            errors.append({"pointer": "/until", "message": "must be after since"})
        if data.where is not None:
            try:
                async with conn.transaction():
                    await fetch_value(conn, self._q["check_jsonpath"], {"expr": data.where})
            except psycopg.Error as exc:
                message = exc.diag.message_primary or "invalid SQL/JSON path expression"
                errors.append({"pointer": "/where", "message": message})
        if errors:
            raise Unprocessable(errors[0]["message"], errors=errors, extra={"horizon": horizon.isoformat()})

    @post(
        "/webhooks/{webhook_id:int}/replay",
        operation_id="replayWebhook",
        summary="Send past events (still in outbox retention) to a webhook again; dry_run counts",
        status_code=HTTP_200_OK,
    )
    async def start(
        self, conn: Conn, principal: Who, webhook_id: IdPath, data: JSONBody[ReplayRequest]
    ) -> ReplayResult:
        hook = await self.webhooks.get(conn, tenant=principal.tenant_filter(), webhook_id=webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        until = data.until or datetime.now(UTC)
        await self._check(conn, data, until)
        params = {
            "webhook_id": webhook_id,
            "since": data.since,
            "until": until,
            "types": data.event_types,
            "predicate": data.where,
        }
        if data.dry_run:
            matched = int(await fetch_value(conn, self._q["count_events"], params))
            return ReplayResult(dry_run=True, matched=matched, replay=None)
        replay_id = int(await fetch_value(conn, self._q["start"], {**params, "created_by": principal.actor}))
        replay = await self._get(conn, principal, replay_id)
        await self.audit_log.record(
            conn,
            principal,
            "replay.start",
            "replay",
            replay_id,
            None,
            {
                **msgspec.to_builtins(data),
                "until": until.isoformat(),
                "webhook_id": webhook_id,
                "total": replay.total,
                "consumer_id": replay.consumer_id,
            },
        )
        return ReplayResult(dry_run=False, matched=replay.total, replay=replay)

    @get("/replays/{replay_id:int}", operation_id="getReplay", summary="A replay's progress (done/total)")
    async def get_replay(self, conn: Conn, principal: Who, replay_id: IdPath) -> Replay:
        return await self._get(conn, principal, replay_id)

    @post(
        "/replays/{replay_id:int}/cancel",
        operation_id="cancelReplay",
        summary="Stop a queued or running replay (what it already queued is still delivered)",
        status_code=HTTP_200_OK,
    )
    async def cancel(self, conn: Conn, principal: Who, replay_id: IdPath) -> Replay:
        before = await self._get(conn, principal, replay_id)
        if not await fetch_value(conn, self._q["cancel"], {"id": replay_id}):
            raise Conflict(f"the replay is {before.state}; only queued or running replays can be cancelled")
        after = await self._get(conn, principal, replay_id)
        await self.audit_log.record(
            conn,
            principal,
            "replay.cancel",
            "replay",
            replay_id,
            {"state": before.state, "done": before.done, "consumer_id": before.consumer_id},
            {"state": after.state, "done": after.done, "consumer_id": after.consumer_id},
        )
        return after
