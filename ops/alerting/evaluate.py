"""One alert evaluation: refresh the roll-up, read every enabled rule with its metric's value, walk each
through the state machine and write the outcome, all in one transaction with the notification jobs it
causes. A worker killed mid-evaluation commits nothing (the next run redoes it); one that commits has
enqueued exactly the notices of its transitions (each with a dedupe key), so nothing is lost or doubled
beyond at-least-once delivery of a job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ops.alerting.machine import Decision, Notify, RuleState, Step, breaches, evaluate
from whk.notice import Notice, encode_notice
from whk.sqlfiles import load_queries

__all__ = ["EvalReport", "Evaluator", "rule_state"]

log = logging.getLogger("whk.ops.alerts")


@dataclass(frozen=True, slots=True)
class EvalReport:
    rules: int
    changed: int
    enqueued: int
    rolled_up: int


def _channel_ids(entries: Any) -> tuple[int, ...]:
    """Channel ids of a rule's ``channels`` list ([{"channel_id": 3}, ...]); other entries are ignored."""
    out: list[int] = []
    for entry in entries or []:
        if isinstance(entry, dict) and isinstance(entry.get("channel_id"), int):
            out.append(int(entry["channel_id"]))
    return tuple(out)


def rule_state(row: dict[str, Any]) -> RuleState:
    steps = tuple(
        Step(after_s=int(s.get("after_s", 0)), channels=_channel_ids(s.get("channels")))
        for s in (row["escalation"] or [])
        if isinstance(s, dict)
    )
    return RuleState(
        state=row["state"],
        for_s=int(row["for_s"]),
        throttle_seconds=int(row["throttle_seconds"]),
        channels=_channel_ids(row["channels"]),
        escalation=steps,
        pending_since=row["pending_since"],
        firing_since=row["firing_since"],
        last_notified_at=row["last_notified_at"],
        escalation_step=int(row["escalation_step"]),
        acknowledged_at=row["acknowledged_at"],
        ack_notified=bool(row["ack_notified"]),
        silenced_until=row["silenced_until"],
        paged_channels=tuple(row["paged_channels"] or ()),
    )


def notices(row: dict[str, Any], history_id: int | None, n: Notify, now: datetime) -> list[Notice]:
    cond = row["condition"]
    return [
        Notice(
            alert_id=int(row["id"]),
            history_id=history_id,
            channel_id=channel_id,
            kind=n.kind,
            step=n.step,
            name=row["name"],
            description=row.get("description"),
            severity=row["severity"],
            metric=str(cond.get("metric")),
            operator=str(cond.get("operator")),
            threshold=float(cond.get("threshold", 0)),
            value=row["value"],
            consumer_id=row["consumer_id"],
            at=now,
        )
        for channel_id in n.channels
    ]


class Evaluator:
    def __init__(self, *, lease_s: float, rollup_horizon_s: int) -> None:
        self._q = load_queries("ops.alerting", "queries.sql")
        self._lease_s = lease_s
        self._horizon = rollup_horizon_s

    async def rollup(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute(self._q["kpi_rollup"], {"horizon_s": self._horizon})
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def evaluate(self, conn: AsyncConnection[Any]) -> EvalReport:
        """Refresh the roll-up, then evaluate every enabled rule (``conn`` in autocommit)."""
        rolled = await self.rollup(conn)
        report = await self.evaluate_rules(conn)
        return EvalReport(
            rules=report.rules, changed=report.changed, enqueued=report.enqueued, rolled_up=rolled
        )

    async def evaluate_rules(self, conn: AsyncConnection[Any]) -> EvalReport:
        """Evaluate every enabled rule against the KPI views, in one transaction of its own."""
        changed = enqueued = 0
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._q["due_rules"], {"lease_s": self._lease_s})
            rows = await cur.fetchall()
            still_ids: list[int] = []
            still_values: list[float | None] = []
            now: datetime | None = None
            for row in rows:
                now = row["now"]
                cond = row["condition"] or {}
                try:
                    breaching = breaches(row["value"], str(cond.get("operator")), float(cond["threshold"]))
                except (KeyError, TypeError, ValueError):
                    log.warning("alert %s has a condition that cannot be evaluated: %r", row["id"], cond)
                    still_ids.append(int(row["id"]))
                    still_values.append(row["value"])
                    continue
                before = rule_state(row)
                decision = evaluate(before, breaching, row["now"])
                if decision.rule == before and not decision.changed:
                    still_ids.append(int(row["id"]))
                    still_values.append(row["value"])
                    continue
                changed += 1
                enqueued += await self._apply(conn, row, decision)
            if still_ids and now is not None:
                await conn.execute(
                    self._q["touch_rules"], {"ids": still_ids, "values": still_values, "now": now}
                )
        return EvalReport(rules=len(rows), changed=changed, enqueued=enqueued, rolled_up=0)

    async def _apply(self, conn: AsyncConnection[Any], row: dict[str, Any], d: Decision) -> int:
        now: datetime = row["now"]
        history_id: int | None = row["history_id"]
        if d.opened:
            details = {
                "metric": row["condition"].get("metric"),
                "operator": row["condition"].get("operator"),
                "threshold": row["condition"].get("threshold"),
                "window_s": row["condition"].get("window_s"),
                "webhook_id": row["condition"].get("webhook_id"),
                "pending_since": d.rule.pending_since.isoformat() if d.rule.pending_since else None,
            }
            cur = await conn.execute(
                self._q["open_history"],
                {
                    "alert_id": row["id"],
                    "now": now,
                    "value": row["value"],
                    "details": Jsonb(details),
                    "severity": row["severity"],
                },
            )
            got = await cur.fetchone()
            assert got is not None
            history_id = int(got[0])
        count = 0
        for n in d.notify:
            for notice in notices(row, history_id, n, now):
                await conn.execute(
                    self._q["enqueue"],
                    {"payload": encode_notice(notice), "dedupe_key": notice.dedupe_key},
                )
                count += 1
        silenced = [
            {"channel_id": c, "kind": n.kind, "step": n.step, "status": "silenced", "at": now.isoformat()}
            for n in d.suppressed
            for c in n.channels
        ]
        if silenced and history_id is not None:
            await conn.execute(self._q["note_history"], {"id": history_id, "entries": Jsonb(silenced)})
        if d.closed and history_id is not None:
            await conn.execute(
                self._q["close_history"], {"id": history_id, "now": now, "value": row["value"]}
            )
        r = d.rule
        await conn.execute(
            self._q["save_rule"],
            {
                "id": row["id"],
                "state": r.state,
                "pending_since": r.pending_since,
                "firing_since": r.firing_since,
                "last_notified_at": r.last_notified_at,
                "escalation_step": r.escalation_step,
                "acknowledged_at": r.acknowledged_at,
                "ack_notified": r.ack_notified,
                "paged_channels": list(r.paged_channels),
                "history_id": history_id,
                "value": row["value"],
                "now": now,
                "opened": d.opened,
            },
        )
        if d.opened or d.closed:
            log.info("alert %s (%s) is %s, value %s", row["id"], row["name"], r.state, row["value"])
        return count
