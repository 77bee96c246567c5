"""Every database call of the dispatcher (its queries live in ``queries.sql`` beside this file).

The heavy lifting is in SQL functions (``sql/functions``): routing, the fair claim, outcome recording and
maintenance each take one round trip. This module only binds parameters and decodes rows.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

import whk
from dispatcher.models import (
    AttemptLog,
    BreakerTransition,
    ClaimedDelivery,
    Recorded,
    RequestOutcome,
    RoundFault,
    WebhookRow,
)
from whk.sqlfiles import load_queries

_ENCODER = msgspec.json.Encoder()
_CLAIM_FIELDS = tuple(ClaimedDelivery.__struct_fields__)
_WEBHOOK_FIELDS = tuple(WebhookRow.__struct_fields__)


def record_params(dispatcher: str, requests: Sequence[RequestOutcome]) -> dict[str, Any]:
    """The parameters of ``whk.record_outcomes`` for ``requests``: the attempts as one JSON array (``ix`` is
    each request's position) and one array per delivery column, built in one pass."""
    attempts: list[AttemptLog] = []
    ids: list[int] = []
    attempt_ix: list[int] = []
    attempt_no: list[int] = []
    state: list[str] = []
    next_at: list[datetime | None] = []
    ack_deadline: list[datetime | None] = []
    dead_reason: list[str | None] = []
    for i, r in enumerate(requests):
        attempts.append(r.attempt if r.attempt.ix == i else msgspec.structs.replace(r.attempt, ix=i))
        for d in r.deliveries:
            ids.append(d.id)
            attempt_ix.append(i)
            attempt_no.append(d.attempt_no)
            state.append(d.state)
            next_at.append(d.next_attempt_at)
            ack_deadline.append(d.ack_deadline)
            dead_reason.append(d.dead_reason)
    return {
        "dispatcher": dispatcher,
        "attempts": _ENCODER.encode(attempts).decode("utf-8"),
        "ids": ids,
        "attempt_ix": attempt_ix,
        "attempt_no": attempt_no,
        "state": state,
        "next_at": next_at,
        "ack_deadline": ack_deadline,
        "dead_reason": dead_reason,
    }


class Repository:
    """Bound to one connection pool; one instance per dispatcher process."""

    def __init__(self, pool: AsyncConnectionPool[Any], dispatcher_id: str) -> None:
        self._pool = pool
        self._id = dispatcher_id
        self._q = load_queries(__package__ or "dispatcher", "queries.sql")

    async def _one(self, name: str, params: dict[str, Any]) -> Any:
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._q[name], params)
            row = await cur.fetchone()
            return None if row is None else row[0]

    async def dispatch_round(
        self, route_limit: int, claim_limit: int, lease_s: float, finished: Sequence[int] = ()
    ) -> tuple[int, bool, list[ClaimedDelivery]]:
        """Route and claim in one round trip: (events routed, due work left, deliveries claimed).

        ``finished``: deliveries whose request ended but whose outcome is not recorded yet; the in-flight
        caps do not count them."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._q["dispatch_round"],
                {
                    "dispatcher": self._id,
                    "route_limit": route_limit,
                    "claim_limit": claim_limit,
                    "lease_s": lease_s,
                    "finished": list(finished),
                },
            )
            rows = await cur.fetchall()
        routed = int(rows[0][0]) if rows else 0
        more_due = any(bool(r[1]) for r in rows if r[2] is None)
        claimed = [
            ClaimedDelivery(**dict(zip(_CLAIM_FIELDS, r[2:], strict=True))) for r in rows if r[2] is not None
        ]
        return routed, more_due, claimed

    async def record(self, requests: Sequence[RequestOutcome]) -> Recorded:
        """Write finished requests (attempt log, delivery states, breaker, usage) in one round trip; the
        answer is how many deliveries were written and the breaker transitions the write made."""
        params = record_params(self._id, requests)
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._q["record_outcomes"], params)
            row = await cur.fetchone()
        if row is None:
            return Recorded(applied=0, transitions=[])
        moved = [
            BreakerTransition(
                webhook_id=int(t["webhook_id"]), from_state=str(t["from"]), to_state=str(t["to"])
            )
            for t in row[1] or []
        ]
        return Recorded(applied=int(row[0] or 0), transitions=moved)

    async def release(self) -> int:
        return int(await self._one("release_deliveries", {"dispatcher": self._id}) or 0)

    async def seconds_to_next_wakeup(self) -> float | None:
        value = await self._one("next_wakeup", {})
        return None if value is None else float(value)

    async def heartbeat(
        self,
        *,
        stopping: bool,
        forget_after_s: float,
        ssrf_policy: str | None = None,
        ssrf_exempt: Sequence[str] | None = None,
        last_error: str | None = None,
    ) -> None:
        await self._one(
            "heartbeat",
            {
                "id": self._id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "version": whk.__version__,
                "stopping": stopping,
                "forget_after_s": forget_after_s,
                "ssrf_policy": ssrf_policy,
                "ssrf_exempt": None if ssrf_exempt is None else list(ssrf_exempt),
                "last_error": last_error,
            },
        )

    async def isolate_round_faults(self, route_limit: int, lease_s: float) -> list[RoundFault]:
        """After a failed round: quarantine the webhooks that make it fail (see the SQL function)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._q["isolate_round_faults"],
                {"dispatcher": self._id, "route_limit": route_limit, "lease_s": lease_s},
            )
            rows = await cur.fetchall()
        return [RoundFault(*r) for r in rows]

    async def quarantine(self, webhook_id: int, stage: str, reason: str, sqlstate: str | None) -> bool:
        """Quarantine one webhook (audited as this dispatcher); False if it already was."""
        params = {
            "id": webhook_id,
            "stage": stage,
            "reason": reason,
            "sqlstate": sqlstate,
            "actor": f"whk-dispatcher:{self._id}",
        }
        return bool(await self._one("quarantine_webhook", params))

    async def set_idle(self, idle: bool) -> None:
        await self._one("set_idle", {"id": self._id, "idle": idle})

    async def system_event(self, kind: str) -> None:
        """system.startup / system.shutdown naming this dispatcher (capture's whk.emit_system)."""
        details = {"dispatcher_id": self._id, "hostname": socket.gethostname(), "pid": os.getpid()}
        await self._one("system_event", {"kind": kind, "details": _ENCODER.encode(details).decode()})

    async def forget(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(self._q["forget_dispatcher"], {"id": self._id})

    async def sweep(self) -> dict[str, int] | None:
        result = await self._one("sweep", {})
        return None if result is None else {str(k): int(v) for k, v in result.items()}

    async def webhooks(self, ids: Sequence[int]) -> list[WebhookRow]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._q["webhooks"], {"ids": list(ids)})
            rows = await cur.fetchall()
        return [WebhookRow(**dict(zip(_WEBHOOK_FIELDS, r, strict=True))) for r in rows]

    async def response_body_max_bytes(self) -> int | None:
        """The 'delivery.response_body_max_bytes' setting (None when absent or not an integer)."""
        value = await self._one("response_body_max_bytes", {})
        return value if isinstance(value, int) and not isinstance(value, bool) else None
