"""The worker's SQL (blocks in alerting/queries.sql): job run records, channels, history notes."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from whk.alertchannels import CHANNEL_TYPES, acreate_channel
from whk.secretbox import SecretBox
from whk.sqlfiles import load_queries

__all__ = ["OpsRepository"]


class OpsRepository:
    def __init__(self) -> None:
        self._q = load_queries("ops.alerting", "queries.sql")

    async def start_run(self, conn: AsyncConnection[Any], job: str, period_s: int, worker: str) -> int:
        cur = await conn.execute(self._q["start_run"], {"job": job, "period_s": period_s, "worker": worker})
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def finish_run(
        self, conn: AsyncConnection[Any], run_id: int, ok: bool, detail: dict[str, Any]
    ) -> None:
        await conn.execute(self._q["finish_run"], {"id": run_id, "ok": ok, "detail": Jsonb(detail)})

    async def create_partitions(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(self._q["create_partitions"], {})

    async def replay_step(self, conn: AsyncConnection[Any], replay_id: int, batch: int) -> bool:
        cur = await conn.execute(self._q["replay_step"], {"id": replay_id, "batch": batch})
        row = await cur.fetchone()
        return bool(row and row[0])

    async def replay_failed(self, conn: AsyncConnection[Any], replay_id: int, error: str) -> None:
        await conn.execute(self._q["replay_failed"], {"id": replay_id, "error": error})

    async def bulk_retry_step(self, conn: AsyncConnection[Any], bulk_id: int, batch: int) -> bool:
        cur = await conn.execute(self._q["bulk_retry_step"], {"id": bulk_id, "batch": batch})
        row = await cur.fetchone()
        return bool(row and row[0])

    async def bulk_retry_failed(self, conn: AsyncConnection[Any], bulk_id: int, error: str) -> None:
        await conn.execute(self._q["bulk_retry_failed"], {"id": bulk_id, "error": error})

    async def forget_runs(self, conn: AsyncConnection[Any]) -> None:
        await conn.execute(self._q["forget_runs"], {})

    async def forget_channels(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute(self._q["forget_channels"], {})
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def seal_legacy_channels(self, conn: AsyncConnection[Any], box: SecretBox) -> int:
        """Move inline channel targets of rules saved before migration 0029 into encrypted channel rows
        (so no credential stays in plain text); returns how many rules were converted."""
        converted = 0
        async with conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._q["legacy_rules"], {})
            for row in await cur.fetchall():

                async def seal(entries: Any, consumer_id: int | None = row["consumer_id"]) -> list[Any]:
                    out: list[Any] = []
                    for e in entries or []:
                        if (
                            isinstance(e, dict)
                            and e.get("type") in CHANNEL_TYPES
                            and isinstance(e.get("target"), str)
                        ):
                            ident = await acreate_channel(
                                conn, box, consumer_id=consumer_id, kind=e["type"], target=e["target"]
                            )
                            out.append({"channel_id": ident})
                        elif isinstance(e, dict) and "channel_id" in e:
                            out.append(e)
                    return out

                channels = await seal(row["channels"])
                escalation = [
                    {**step, "channels": await seal(step.get("channels"))}
                    for step in row["escalation"] or []
                    if isinstance(step, dict)
                ]
                await conn.execute(
                    self._q["set_rule_channels"],
                    {"id": row["id"], "channels": Jsonb(channels), "escalation": Jsonb(escalation)},
                )
                converted += 1
        return converted

    async def channel(self, conn: AsyncConnection[Any], channel_id: int) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(self._q["channel"], {"id": channel_id})
        return await cur.fetchone()

    async def note(self, conn: AsyncConnection[Any], history_id: int, entry: dict[str, Any]) -> None:
        await conn.execute(self._q["note_history"], {"id": history_id, "entries": Jsonb([entry])})
